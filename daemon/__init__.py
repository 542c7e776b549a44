"""lipsyncd: the service that watches an inbox, renders lip-sync jobs with :mod:`lipsync`,
uploads the results to S3-compatible storage and writes JSON sidecars with direct links."""
