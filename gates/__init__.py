"""Who may pass: the gallery (SQLite + FAISS), enrolment, access rules and decisions, the service's
store of gates, keys and events, and offline analysis of a gate camera's video against the gallery."""
