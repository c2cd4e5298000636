//! gRPC adapter: `conduit.v1.AuthService` → `IdentityService`. Translates wire types only.

use tonic::{Request, Response, Status};

use super::service::{IdentityService, SessionView};
use crate::{
    auth::Auth,
    grpc::timestamp,
    modules::users::grpc::client,
    proto::conduit::v1::{
        self as pb,
        auth_service_server::{AuthService as AuthApi, AuthServiceServer},
    },
};

pub struct AuthGrpc(IdentityService);

pub fn server(identity: IdentityService) -> AuthServiceServer<AuthGrpc> {
    AuthServiceServer::new(AuthGrpc(identity))
}

impl From<SessionView> for pb::Session {
    fn from(s: SessionView) -> Self {
        pb::Session {
            id: s.id,
            user_agent: s.user_agent,
            ip: s.ip,
            create_time: Some(timestamp(&s.created_at)),
            last_use_time: Some(timestamp(&s.last_used_at)),
            expire_time: Some(timestamp(&s.expires_at)),
            current: s.current,
        }
    }
}

#[tonic::async_trait]
impl AuthApi for AuthGrpc {
    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let client = client(&request);
        let token = request.into_inner().refresh_token;
        let user = self.0.refresh(token, client).await?;
        Ok(Response::new(pb::RefreshResponse {
            user: Some(user.into()),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        self.0.logout(principal).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        let sessions = self.0.sessions(principal).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(pb::Session::from).collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        let id = request.into_inner().id;
        self.0.revoke_session(principal, id).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn enroll_totp(
        &self,
        request: Request<pb::EnrollTotpRequest>,
    ) -> Result<Response<pb::EnrollTotpResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        let enrollment = self.0.enroll_totp(principal).await?;
        Ok(Response::new(pb::EnrollTotpResponse {
            secret: enrollment.secret,
            otpauth_uri: enrollment.otpauth_uri,
        }))
    }

    async fn confirm_totp(
        &self,
        request: Request<pb::ConfirmTotpRequest>,
    ) -> Result<Response<pb::ConfirmTotpResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        let code = request.into_inner().code;
        let recovery_codes = self.0.confirm_totp(principal, code).await?;
        Ok(Response::new(pb::ConfirmTotpResponse { recovery_codes }))
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        let code = request.into_inner().code;
        self.0.disable_totp(principal, code).await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }
}
