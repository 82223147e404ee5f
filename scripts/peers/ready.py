"""Readiness probes for the emulators: exits 0 when the peer answers."""
import sys
import urllib.request


def mongo(port: str) -> None:
    import pymongo

    client = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=500
    )
    client.admin.command("ping")


def mongo_tls(port: str) -> None:
    import os

    import pymongo

    client = pymongo.MongoClient(
        f"mongodb://admin:{os.environ['WARP_PEER_TLS_PASSWORD']}@localhost:{port}/"
        "?directConnection=true&tls=true&authSource=admin",
        tlsCAFile=os.path.join(os.environ["WARP_PEER_TLS_DIR"], "ca.crt"),
        serverSelectionTimeoutMS=500,
    )
    client.admin.command("ping")


def bigquery(port: str) -> None:
    url = f"http://127.0.0.1:{port}/bigquery/v2/projects/test-project/datasets"
    with urllib.request.urlopen(url, timeout=1) as response:
        if response.status != 200:
            raise SystemExit(1)


{"mongo": mongo, "mongo-tls": mongo_tls, "bigquery": bigquery}[sys.argv[1]](sys.argv[2])
