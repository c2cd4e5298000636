//! gRPC adapter: `conduit.v1.UserService` → `UserService`. Translates wire types only.

use tonic::{Request, Response, Status};

use super::service::{AuthenticatedUser, Credentials, Registration, UserChanges, UserService};
use crate::{
    auth::Auth,
    proto::conduit::v1::{
        self as pb,
        user_service_server::{UserService as UserApi, UserServiceServer},
    },
};

pub struct UserGrpc(UserService);

pub fn server(users: UserService) -> UserServiceServer<UserGrpc> {
    UserServiceServer::new(UserGrpc(users))
}

impl From<AuthenticatedUser> for pb::User {
    fn from(u: AuthenticatedUser) -> Self {
        pb::User {
            email: u.email,
            token: u.token,
            username: u.username,
            bio: u.bio,
            image: u.image,
        }
    }
}

#[tonic::async_trait]
impl UserApi for UserGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let r = request.into_inner();
        let user = self
            .0
            .register(Registration {
                username: r.username,
                email: r.email,
                password: r.password,
            })
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user.into()),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = request.into_inner();
        let user = self
            .0
            .login(Credentials {
                email: r.email,
                password: r.password,
            })
            .await?;
        Ok(Response::new(pb::LoginResponse {
            user: Some(user.into()),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        let user = self.0.current(principal).await?;
        Ok(Response::new(pb::GetCurrentUserResponse {
            user: Some(user.into()),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UpdateUserResponse>, Status> {
        let principal = Auth::of(&request).required()?;
        let r = request.into_inner();
        let changes = UserChanges {
            email: r.email,
            username: r.username,
            password: r.password,
            // proto3 `optional string` cannot say null: an empty string clears the field.
            bio: r.bio.map(Some),
            image: r.image.map(Some),
        };
        let user = self.0.update(principal, changes).await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user.into()),
        }))
    }
}
