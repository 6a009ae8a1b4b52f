"""The moto fixtures against the real clients: boto3, odc.aws (S3Client, queue helpers),
s3fs/aiobotocore and GDAL's /vsis3/ through rasterio, all from environment variables."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.servers


def test_moto_environ_is_loopback(moto_server):
    env = moto_server.environ()
    assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{moto_server.port}"
    assert env["AWS_S3_ENDPOINT"] == f"127.0.0.1:{moto_server.port}"
    assert env["AWS_DEFAULT_REGION"]
    assert {env["AWS_HTTPS"], env["AWS_VIRTUAL_HOSTING"]} == {"NO", "FALSE"}


def test_s3_round_trip_boto3_from_env(moto_env, s3_bucket):
    import boto3

    s3 = boto3.client("s3")  # endpoint, credentials and region all from the environment
    s3.put_object(Bucket=s3_bucket, Key="a/b.json", Body=b'{"x": 1}')
    assert json.loads(s3.get_object(Bucket=s3_bucket, Key="a/b.json")["Body"].read()) == {"x": 1}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["a/b.json"]


def test_s3_bucket_is_fresh(moto_env, s3_bucket):
    import boto3

    assert boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0


def test_odc_aws_s3client_from_env(moto_env, s3_bucket):
    from odc.aws.s3_client import S3Client

    client = S3Client()
    url = f"s3://{s3_bucket}/out/x_2020.json"
    # S3Client.dump swallows errors and reports them as (url, False)
    assert client.dump(b'{"ok": true}', url, ContentType="application/json") == (url, True)
    assert client.fetch(url) == b'{"ok": true}'
    assert client.head_object(url)["ContentType"] == "application/json"
    assert list(client.ls_dir(f"s3://{s3_bucket}/out/")) == [url]


def test_s3fs_aiobotocore_from_env(moto_env, s3_bucket):
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe(f"{s3_bucket}/fs/x.bin", b"\x00\x01")
    assert fs.cat(f"{s3_bucket}/fs/x.bin") == b"\x00\x01"


@pytest.mark.parametrize("scheme", ["/vsis3/", "s3://"])
def test_rasterio_vsis3_write_and_read(moto_env, s3_bucket, scheme):
    import boto3
    import rasterio
    from rasterio.transform import from_origin

    data = np.arange(64 * 64, dtype="int16").reshape(1, 64, 64)
    path = f"{scheme}{s3_bucket}/ndvi/tile.tif"
    profile = dict(
        driver="GTiff",
        width=64,
        height=64,
        count=1,
        dtype="int16",
        crs="EPSG:3577",
        transform=from_origin(1_500_000, -3_900_000, 30, 30),
        tiled=True,
        blockxsize=32,
        blockysize=32,
        compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="ndvi/tile.tif")
    assert head["ContentLength"] > 0
    with rasterio.open(f"/vsis3/{s3_bucket}/ndvi/tile.tif") as src:
        assert src.crs.to_epsg() == 3577
        np.testing.assert_array_equal(src.read(), data)
        # a windowed read exercises HTTP range requests against moto
        window = src.read(1, window=((32, 64), (0, 32)))
        np.testing.assert_array_equal(window, data[0, 32:, :32])


def test_sqs_send_receive_with_odc_queue(moto_env, sqs_queue):
    from odc.aws.queue import get_messages, get_queue

    queue = get_queue(sqs_queue.name)
    assert queue.url == sqs_queue.url
    assert queue.url.startswith(moto_env.endpoint)
    for i in range(3):
        queue.send_message(MessageBody=json.dumps({"tile": i}))
    got = []
    for msg in get_messages(queue, limit=3, max_wait=1, messages_per_request=10):
        got.append(json.loads(msg.body)["tile"])
        msg.delete()
    assert sorted(got) == [0, 1, 2]
    assert list(get_messages(queue, max_wait=0)) == []


@pytest.mark.parametrize("sqs_queue", [{"max_receive_count": 2}], indirect=True)
def test_sqs_redrive_to_dlq_after_max_receive_count(moto_env, sqs_queue):
    import boto3

    sqs = boto3.client("sqs")
    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=sqs_queue.url, AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert policy["deadLetterTargetArn"] == sqs_queue.dlq_arn
    assert int(policy["maxReceiveCount"]) == 2

    sqs.send_message(QueueUrl=sqs_queue.url, MessageBody="poison")
    # Receive without deleting, making the message visible again at once each time.
    for receive in range(1, sqs_queue.max_receive_count + 1):
        msgs = sqs.receive_message(
            QueueUrl=sqs_queue.url, AttributeNames=["ApproximateReceiveCount"]
        ).get("Messages", [])
        assert len(msgs) == 1, f"receive #{receive}"
        assert msgs[0]["Attributes"]["ApproximateReceiveCount"] == str(receive)
        sqs.change_message_visibility(
            QueueUrl=sqs_queue.url, ReceiptHandle=msgs[0]["ReceiptHandle"], VisibilityTimeout=0
        )
    # One more receive than allowed moves it to the dead-letter queue.
    assert sqs.receive_message(QueueUrl=sqs_queue.url).get("Messages", []) == []
    deadline = time.monotonic() + 5
    dead = []
    while not dead and time.monotonic() < deadline:
        dead = sqs.receive_message(QueueUrl=sqs_queue.dlq_url, WaitTimeSeconds=1).get(
            "Messages", []
        )
    assert [m["Body"] for m in dead] == ["poison"]


@pytest.mark.parametrize("explicit_target", [True, False], ids=["named-target", "dlq-source"])
def test_odc_redrive_queue_moves_dead_letters_back(moto_env, sqs_queue, explicit_target):
    import boto3
    from odc.aws.queue import redrive_queue

    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=sqs_queue.dlq_url, MessageBody="retry-me")
    target = sqs_queue.name if explicit_target else None  # None: ListDeadLetterSourceQueues
    assert redrive_queue(sqs_queue.dlq_name, target, max_wait=0) == 1
    back = sqs.receive_message(QueueUrl=sqs_queue.url, WaitTimeSeconds=1).get("Messages", [])
    assert [m["Body"] for m in back] == ["retry-me"]
