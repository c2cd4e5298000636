//! sea-orm entities, shared by the feature modules' repositories. The schema itself is
//! owned by the migrations crate; these mirror it.

pub mod users;
