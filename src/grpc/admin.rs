//! AdminService: the controller's and operators' view of the daemon.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::{blocking, to_status};
use crate::ids::AppId;
use crate::proto::admin_service_server::AdminService;
use crate::proto::{
    ApplicationState, ExecutorState, GetShuffleStateRequest, RemoveApplicationRequest,
    RemoveApplicationResponse, ShuffleState,
};
use crate::store::Store;

pub struct AdminApi {
    store: Arc<Store>,
    node_name: String,
}

impl AdminApi {
    pub fn new(store: Arc<Store>, node_name: String) -> Self {
        Self { store, node_name }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn get_shuffle_state(
        &self,
        request: Request<GetShuffleStateRequest>,
    ) -> Result<Response<ShuffleState>, Status> {
        let req = request.into_inner();
        let app = match req.app_id.as_str() {
            "" => None,
            id => Some(AppId::parse(id).map_err(|e| to_status(e.into()))?),
        };
        let apps = self.store.snapshot(app.as_ref()).map_err(to_status)?;
        let applications: Vec<ApplicationState> = apps
            .into_iter()
            .map(|a| ApplicationState {
                app_id: a.app_id,
                committed_outputs: a.committed_outputs,
                bytes_stored: a.bytes_stored,
                last_activity_unix_ms: a.last_activity_unix_ms,
                executors: a
                    .executors
                    .into_iter()
                    .map(|e| ExecutorState {
                        executor_id: e.executor_id,
                        registered: e.registered,
                        committed_outputs: e.committed_outputs,
                        bytes_stored: e.bytes_stored,
                        writes_in_flight: e.writes_in_flight,
                        fetches_in_flight: e.fetches_in_flight,
                        last_activity_unix_ms: e.last_activity_unix_ms,
                    })
                    .collect(),
            })
            .collect();
        let disk_free_bytes = self.store.disk_free().unwrap_or(0);
        Ok(Response::new(ShuffleState {
            bytes_stored: applications.iter().map(|a| a.bytes_stored).sum(),
            applications,
            disk_free_bytes,
            node_name: self.node_name.clone(),
        }))
    }

    async fn remove_application(
        &self,
        request: Request<RemoveApplicationRequest>,
    ) -> Result<Response<RemoveApplicationResponse>, Status> {
        let app = AppId::parse(&request.into_inner().app_id).map_err(|e| to_status(e.into()))?;
        let store = Arc::clone(&self.store);
        let target = app.clone();
        let report = blocking("removal", move || store.remove_app(&target)).await?;
        tracing::info!(app = %app, bytes_freed = report.bytes_freed, outputs = report.outputs_removed, executors = report.executors_removed, "application removed");
        Ok(Response::new(RemoveApplicationResponse {
            bytes_freed: report.bytes_freed,
            outputs_removed: report.outputs_removed,
            executors_removed: report.executors_removed,
        }))
    }
}
