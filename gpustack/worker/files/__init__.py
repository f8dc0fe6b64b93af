"""Model files on a worker: the cache, downloads, and the API the server uses to manage them."""
