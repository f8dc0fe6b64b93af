"""The worker: reports its machine, runs the engines the server assigns to it, proxies requests to them."""
