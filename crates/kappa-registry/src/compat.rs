//! Compatibility levels and the check of a new schema against a subject's history.
