"""A local S3 endpoint for the benches: moto's standalone server (the dev extra) on 127.0.0.1,
with a bucket, and this process's environment pointed at it (set before Ray starts, so that its
workers upload there too)."""

from __future__ import annotations

import logging
import os
import uuid

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}


def start_s3():
    """The running server and its new bucket's URI (s3://NAME)."""
    from moto.server import ThreadedMotoServer
    from pyarrow.fs import S3FileSystem

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    name = f"bench-{uuid.uuid4().hex[:8]}"
    S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], allow_bucket_creation=True,
                 access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                 region="us-east-1").create_dir(name)
    return server, f"s3://{name}"
