"""The API dialects Easel speaks, as pure functions: request JSON → job fields, status → response JSON,
error → (HTTP status, body) (each module's `error_answer`), and how the dialect names a job's state.

Nothing here does I/O. The routes in service/ call these; so can the webhook dispatcher, so each
dialect's shapes live in one place. Only contract/ is imported.
"""
