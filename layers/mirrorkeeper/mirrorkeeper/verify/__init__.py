"""What the verification workflow runs (three Lambdas, or ``mirrorkeeper verify``): diff the
manifests (:mod:`.drift`), probe every endpoint (:mod:`.probes`), judge health (:mod:`.health`,
:mod:`.history`) and publish it (:mod:`.metrics`, :mod:`.alerts`, :mod:`.status`).
:mod:`.workflow` chains the steps, :mod:`.events` parses their inputs, :mod:`.lambdas` adapts them
to Lambda. Imports only the shared modules below it."""
