//! gRPC adapter: `conduit.v1.ProfileService` → `ProfileService`.

use tonic::{Request, Response, Status};

use super::service::{ProfileService, ProfileView};
use crate::{
    auth::Auth,
    proto::conduit::v1::{
        self as pb,
        profile_service_server::{ProfileService as ProfileApi, ProfileServiceServer},
    },
};

pub struct ProfileGrpc(ProfileService);

pub fn server(profiles: ProfileService) -> ProfileServiceServer<ProfileGrpc> {
    ProfileServiceServer::new(ProfileGrpc(profiles))
}

impl From<ProfileView> for pb::Profile {
    fn from(p: ProfileView) -> Self {
        pb::Profile {
            username: p.username,
            bio: p.bio,
            image: p.image,
            following: p.following,
        }
    }
}

#[tonic::async_trait]
impl ProfileApi for ProfileGrpc {
    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let viewer = Auth::of(&request).optional()?;
        let profile = self.0.get(viewer, &request.into_inner().username).await?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(profile.into()),
        }))
    }

    async fn follow_user(
        &self,
        request: Request<pb::FollowUserRequest>,
    ) -> Result<Response<pb::FollowUserResponse>, Status> {
        let viewer = Auth::of(&request).required()?;
        let profile = self
            .0
            .follow(viewer, &request.into_inner().username)
            .await?;
        Ok(Response::new(pb::FollowUserResponse {
            profile: Some(profile.into()),
        }))
    }

    async fn unfollow_user(
        &self,
        request: Request<pb::UnfollowUserRequest>,
    ) -> Result<Response<pb::UnfollowUserResponse>, Status> {
        let viewer = Auth::of(&request).required()?;
        let profile = self
            .0
            .unfollow(viewer, &request.into_inner().username)
            .await?;
        Ok(Response::new(pb::UnfollowUserResponse {
            profile: Some(profile.into()),
        }))
    }
}
