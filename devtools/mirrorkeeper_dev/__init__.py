"""Development tools of mirrorkeeper: what the demo, the tests and the benchmarks start beside it.

Kept out of the runtime package (the Lambda layer and the container image ship ``mirrorkeeper``
alone): a real rsync daemon on loopback (:mod:`.rsyncd`), a launcher for local services
(:mod:`.services`), generated upstream trees (:mod:`.sampletree`) and ``mirrorkeeper demo``
(:mod:`.demo`, registered as a command through the ``mirrorkeeper.commands`` entry point).
"""
