//! gRPC adapter: `conduit.v1.UserService` → `UserService`. Translates wire types only.

use tonic::{Request, Response, Status};

use super::service::{AuthenticatedUser, Credentials, Registration, UserChanges, UserService};
use crate::{
    auth::{Auth, sessions::Client},
    grpc::UpdateMask,
    proto::conduit::v1::{
        self as pb,
        user_service_server::{UserService as UserApi, UserServiceServer},
    },
};

pub struct UserGrpc(UserService);

/// The fields UpdateUser may change; `token` is output only.
const UPDATABLE: &[&str] = &["email", "username", "password", "bio", "image"];

pub fn server(users: UserService) -> UserServiceServer<UserGrpc> {
    UserServiceServer::new(UserGrpc(users))
}

/// The caller as the session list shows it (gRPC clients name themselves in `user-agent`).
pub(crate) fn client<T>(request: &Request<T>) -> Client {
    Client::new(
        request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok()),
    )
}

impl From<AuthenticatedUser> for pb::User {
    fn from(u: AuthenticatedUser) -> Self {
        pb::User {
            email: u.email,
            token: u.token,
            refresh_token: u.refresh_token.unwrap_or_default(),
            username: u.username,
            bio: u.bio,
            image: u.image,
            password: String::new(),
        }
    }
}

#[tonic::async_trait]
impl UserApi for UserGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        let user = self
            .0
            .register(
                Registration {
                    username: r.username,
                    email: r.email,
                    password: r.password,
                },
                client,
            )
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user.into()),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        let user = self
            .0
            .login(
                Credentials {
                    email: r.email,
                    password: r.password,
                    otp: Some(r.otp).filter(|otp| !otp.is_empty()),
                },
                client,
            )
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
        let u = r.user.unwrap_or_default();
        let mask = UpdateMask::resolve(r.update_mask, UPDATABLE, |field| match field {
            "email" => !u.email.is_empty(),
            "username" => !u.username.is_empty(),
            "password" => !u.password.is_empty(),
            "bio" => u.bio.is_some(),
            _ => u.image.is_some(),
        })?;
        // A masked bio or image that is unset or empty clears it.
        let changes = UserChanges {
            email: mask.pick("email", u.email),
            username: mask.pick("username", u.username),
            password: mask.pick("password", u.password),
            bio: mask.pick("bio", u.bio),
            image: mask.pick("image", u.image),
            otp: Some(r.otp).filter(|code| !code.is_empty()),
        };
        let user = self.0.update(principal, changes).await?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(user.into()),
        }))
    }
}
