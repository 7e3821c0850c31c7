"""What the push endpoint runs (the push function behind its function URL, or ``mirrorkeeper
serve-push``): an upstream that has published says so with a signed ``POST /push/<mirror>``
(:mod:`.signature`), and the mirror's sync starts at once or, while one runs, once more after it.
:mod:`.handler` decides every answer, :mod:`.admission` keeps the mirror's push state,
:mod:`.starters` start the sync (an ECS task or a local process), :mod:`.server` and :mod:`.lambdas`
adapt the handler to HTTP and to Lambda. Imports only the shared modules below it."""
