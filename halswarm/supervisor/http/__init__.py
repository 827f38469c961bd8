"""The HTTP app: composes the feature routers, installs error handling, guards and documentation."""
