"""What the sync task (ECS Fargate, ``mirrorkeeper sync``) runs: one run from the upstream's rsync
module into S3. :mod:`.run` drives it; :mod:`.rsync` lists and fetches, :mod:`.tree` checks names and
resolves symlinks, :mod:`.planner` diffs against the manifest, :mod:`.lease` keeps one run at a
time, :mod:`.store` writes the served tree. Imports only the shared modules below it."""
