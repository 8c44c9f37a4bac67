"""Build contexts, Dockerfiles, content-hash tags, the registry API and the Docker engine."""
