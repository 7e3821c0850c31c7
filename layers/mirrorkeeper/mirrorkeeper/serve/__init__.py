"""What the front ends run: ``serve-http`` (:mod:`.http`, CloudFront + S3 semantics, with
:mod:`.routing` as the Python twin of ``cloudfront/function.js``) and ``serve-ftp`` (:mod:`.ftp`),
both reading the served prefix through :mod:`.served`, which builds every key under it, so private
state is unreachable by construction; and ``serve-rsync``'s local replica (:mod:`.replica`, built
from the served prefix and the manifest) with the rsync daemon that serves it (:mod:`.rsyncd`).
Imports only the shared modules below it."""
