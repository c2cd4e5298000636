"""gRPC load from a client stack nobody here wrote (Python grpcio), for scripts/replicas.

Threads call ListArticles (and every eighth call Favorite/Unfavorite) as fast as the
server answers, each thread on its own channel, until the time is up; prints one JSON
line: calls answered OK and the failures by status code, with a sample message each.
Usage: grpc_load.py HOST:PORT SECONDS THREADS TOKEN SLUG
"""

import collections
import json
import pathlib
import sys
import tempfile
import threading
import time

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from python_client import generate_stubs  # noqa: E402


def main(target: str, seconds: float, threads: int, token: str, slug: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate_stubs(pathlib.Path(tmp))
        from conduit.v1 import articles_pb2, articles_pb2_grpc

        deadline = time.monotonic() + seconds
        ok = [0] * threads
        failed = collections.Counter()
        samples = {}
        lock = threading.Lock()
        auth = [("authorization", f"Token {token}")]

        def worker(index: int) -> None:
            # Default options: grpcio reconnects after GOAWAY and retries, transparently,
            # calls the server refused before it began them.
            with grpc.insecure_channel(target) as channel:
                stub = articles_pb2_grpc.ArticleServiceStub(channel)
                n = 0
                while time.monotonic() < deadline:
                    n += 1
                    try:
                        if n % 8 == 0:
                            stub.FavoriteArticle(articles_pb2.FavoriteArticleRequest(slug=slug), metadata=auth, timeout=10)
                        elif n % 8 == 4:
                            stub.UnfavoriteArticle(articles_pb2.UnfavoriteArticleRequest(slug=slug), metadata=auth, timeout=10)
                        else:
                            stub.ListArticles(articles_pb2.ListArticlesRequest(page_size=5), timeout=10)
                        ok[index] += 1
                    except grpc.RpcError as e:
                        with lock:
                            failed[e.code().name] += 1
                            samples.setdefault(e.code().name, e.details())

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        print(json.dumps({"ok": sum(ok), "failed": dict(failed), "samples": samples}))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
