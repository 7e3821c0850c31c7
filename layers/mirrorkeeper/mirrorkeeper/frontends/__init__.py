"""The front ends: HTTP (``serve-http``, CloudFront semantics) and FTP (``serve-ftp``) over the served prefix.

Both read S3 through :class:`~mirrorkeeper.frontends.served.ServedTree`, which only ever builds keys
under the layout's served prefix, so private state is unreachable by construction.
"""
