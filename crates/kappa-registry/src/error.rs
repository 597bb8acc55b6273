//! The registry's errors, each with the HTTP status and Confluent `error_code` a Confluent
//! client expects.

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {version} not found.")]
    VersionNotFound { version: String },
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// A look-up of a schema that is not registered under the subject.
    #[error("Schema not found")]
    SchemaNotInSubject,
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted { subject: String, version: i32 },
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted { subject: String, version: i32 },
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectConfigNotFound(String),
    #[error("Subject '{0}' does not have subject-level mode configured")]
    SubjectModeNotFound(String),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    #[error("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibilityLevel,
    #[error("Invalid mode. Valid values are READWRITE, READONLY, IMPORT")]
    InvalidMode,
    #[error("{0}")]
    OperationNotPermitted(String),
    #[error("One or more references exist to the schema {{subject={subject},version={version}}}")]
    ReferenceExists { subject: String, version: i32 },
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]", .reasons.join(", "))]
    Incompatible {
        subject: String,
        reasons: Vec<String>,
    },
    #[error("{0}")]
    InvalidRuleSet(String),
    #[error("Invalid subject name '{0}'")]
    InvalidSubject(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("Request body of {size} bytes is larger than the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("Error in the backend data store: {0}")]
    Store(String),
    #[error("Operation timed out: {0}")]
    Timeout(String),
}

impl RegistryError {
    /// (HTTP status, Confluent error code)
    pub fn codes(&self) -> (u16, u32) {
        use RegistryError::*;
        match self {
            SubjectNotFound(_) => (404, 40401),
            VersionNotFound { .. } => (404, 40402),
            SchemaNotFound(_) | SchemaNotInSubject => (404, 40403),
            SubjectSoftDeleted(_) => (404, 40404),
            SubjectNotSoftDeleted(_) => (404, 40405),
            VersionSoftDeleted { .. } => (404, 40406),
            VersionNotSoftDeleted { .. } => (404, 40407),
            SubjectConfigNotFound(_) => (404, 40408),
            SubjectModeNotFound(_) => (404, 40409),
            InvalidSchema(_) => (422, 42201),
            InvalidVersion(_) => (422, 42202),
            InvalidCompatibilityLevel => (422, 42203),
            InvalidMode => (422, 42204),
            OperationNotPermitted(_) => (422, 42205),
            ReferenceExists { .. } => (422, 42206),
            Incompatible { .. } => (409, 409),
            InvalidRuleSet(_) => (422, 42210),
            InvalidSubject(_) => (422, 42208),
            BadRequest(_) => (400, 400),
            Unprocessable(_) => (422, 422),
            BodyTooLarge { .. } => (413, 413),
            Store(_) => (500, 50001),
            Timeout(_) => (500, 50002),
        }
    }
}
