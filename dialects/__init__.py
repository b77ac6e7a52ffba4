"""The API dialects Easel speaks, as pure functions: request JSON → job fields, status → response JSON.

Nothing here does I/O. The routes in service/ call these; so can the webhook dispatcher, so each
dialect's shapes live in one place. Only contract/ is imported.
"""
