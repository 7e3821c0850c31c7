"""mirrorkeeper: keep a public download mirror in AWS (rsync upstream → S3 → HTTP/FTP, verified)."""

__version__ = "0.1.0"
