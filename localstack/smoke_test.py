"""Use every resource of a provisioned storage stack once, as the labelq services will.

    python smoke_test.py STACK        (with the LocalStack venv's python; selftest.sh runs it)

Reads the stack's outputs and parameters from CloudFormation, then checks that each resource is
configured as infra/storage.yaml says and behaves as the services rely on: S3 put/get; DynamoDB
conditional put and a query on owner-created-index; SNS publish arriving raw, with its message
attributes, on the queue; a message received MaxReceiveCount times moving to the dead-letter queue.
Prints one line per check with its time and exits non-zero on the first failure. Lines starting
"note:" are places where the emulator is known to differ from AWS; they do not fail the run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from contextlib import contextmanager

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


# True unless the endpoint is AWS itself: then known emulator gaps print a note, not a failure.
ENDPOINT = os.environ.get("AWS_ENDPOINT_URL") or (
    f"http://127.0.0.1:{os.environ.get('LOCALSTACK_PORT', '4566')}"
)
EMULATOR = "amazonaws.com" not in ENDPOINT


class CheckFailed(Exception):
    pass


def note(message: str) -> None:
    print(f"note: {message}", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@contextmanager
def step(name: str):
    started = time.monotonic()
    yield
    print(f"ok   {name} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)


def clients():
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"})
    return {n: session.client(n, endpoint_url=ENDPOINT, config=config)
            for n in ("cloudformation", "s3", "dynamodb", "sns", "sqs")}


def stack_info(cfn, stack: str) -> tuple[dict[str, str], dict[str, str]]:
    desc = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    params = {p["ParameterKey"]: p["ParameterValue"] for p in desc.get("Parameters", [])}
    return outputs, params


def check_s3(s3, out: dict, params: dict) -> None:
    bucket = out["BucketName"]
    with step("s3: bucket policy (TLS only)"):
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        expect(any(s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s.get("Condition"))
                   for s in policy["Statement"]), f"no TLS-only statement in {policy}")

    # LocalStack's CloudFormation provider for AWS::S3::Bucket applies only the name, notification,
    # versioning, CORS, object lock, tags and website properties; encryption, public access block
    # and ownership controls read back as S3's defaults for new buckets (which match the template),
    # the lifecycle rules are missing, and the bucket is created with a public-read ACL.
    with step("s3: bucket configuration (public access block, encryption, ownership, lifecycle)"):
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        expect(all(pab.get(k) for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                                        "RestrictPublicBuckets")), f"public access block: {pab}")
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        expect(rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256",
               f"encryption: {rules}")
        own = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        expect(own == [{"ObjectOwnership": "BucketOwnerEnforced"}], f"ownership: {own}")
        days = max(1, math.ceil(int(params.get("JobTtlHours", "24")) / 24))
        try:
            lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        except ClientError as e:
            if e.response["Error"]["Code"] != "NoSuchLifecycleConfiguration":
                raise
            lifecycle = []
        expiring = {
            (r.get("Filter", {}).get("Prefix") or r.get("Prefix")): r.get("Expiration", {}).get("Days")
            for r in lifecycle
            if r.get("Expiration")
        }
        if EMULATOR and not lifecycle:
            note("the bucket has no lifecycle rules (LocalStack's CloudFormation ignores "
                 "LifecycleConfiguration; AWS applies it)")
        else:
            expect(expiring == {"images/": days, "results/": days},
                   f"lifecycle expirations {expiring}, want {days} days on images/ and results/")
        public = [g for g in s3.get_bucket_acl(Bucket=bucket)["Grants"]
                  if g["Grantee"].get("URI", "").endswith("/global/AllUsers")]
        if EMULATOR and public:
            note("the bucket's ACL grants AllUsers READ (LocalStack's CloudFormation creates "
                 "buckets public-read unless AccessControl is set; on AWS BucketOwnerEnforced "
                 "disables ACLs, and LocalStack enforces no access control anyway)")
        else:
            expect(not public, f"public ACL grants {public}")

    key = f"images/smoke-{uuid.uuid4()}"
    body = os.urandom(1024)
    with step("s3: put and get an object under images/"):
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/png")
        got = s3.get_object(Bucket=bucket, Key=key)
        expect(got["Body"].read() == body, "object body differs")
        expect(got["ContentType"] == "image/png", f"content type {got['ContentType']}")
    if EMULATOR:
        note("s3 served plain-http requests despite the TLS-only bucket policy (LocalStack "
             "does not enforce bucket policies; AWS answers 403)")


def check_dynamodb(ddb, out: dict) -> None:
    table = out["TableName"]
    with step("dynamodb: table configuration (on-demand, key, GSI, TTL, PITR, SSE)"):
        t = ddb.describe_table(TableName=table)["Table"]
        expect(t.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST",
               f"billing {t.get('BillingModeSummary')}")
        expect(t["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}], f"key {t['KeySchema']}")
        gsis = {g["IndexName"]: g for g in t.get("GlobalSecondaryIndexes", [])}
        gsi = gsis.get("owner-created-index")
        expect(gsi is not None, f"no owner-created-index in {list(gsis)}")
        expect(gsi["KeySchema"] == [{"AttributeName": "owner", "KeyType": "HASH"},
                                    {"AttributeName": "created_key", "KeyType": "RANGE"}],
               f"GSI key {gsi['KeySchema']}")
        expect(gsi["Projection"]["ProjectionType"] == "ALL", f"GSI projection {gsi['Projection']}")
        expect(t.get("SSEDescription", {}).get("Status") == "ENABLED", f"SSE {t.get('SSEDescription')}")
        ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        expect(ttl.get("AttributeName") == "ttl" and ttl.get("TimeToLiveStatus") == "ENABLED", f"TTL {ttl}")
        pitr = ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
        pitr_on = pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
        if EMULATOR and not pitr_on:
            note("point-in-time recovery is off (LocalStack's CloudFormation ignores "
                 "PointInTimeRecoverySpecification; AWS applies it)")
        else:
            expect(pitr_on, f"PITR {pitr}")

    owner = f"owner-{uuid.uuid4()}"
    expires = str(int(time.time()) + 3600)

    def put(job: str, created: str):
        ddb.put_item(
            TableName=table,
            Item={"pk": {"S": job}, "owner": {"S": owner}, "created_key": {"S": created},
                  "status": {"S": "PENDING"}, "ttl": {"N": expires}},
            ConditionExpression="attribute_not_exists(pk)",
        )

    with step("dynamodb: PutItem with ConditionExpression (second put of the same key refused)"):
        put("job#a", "2026-11-23T10:00:00Z#a")
        try:
            put("job#a", "2026-11-23T10:00:00Z#a")
        except ClientError as e:
            expect(e.response["Error"]["Code"] == "ConditionalCheckFailedException", f"got {e}")
        else:
            raise CheckFailed("conditional put of an existing key succeeded")
        put("job#b", "2026-11-23T11:00:00Z#b")

    with step("dynamodb: Query owner-created-index, newest first"):
        items = ddb.query(
            TableName=table,
            IndexName="owner-created-index",
            KeyConditionExpression="#o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": {"S": owner}},
            ScanIndexForward=False,
        )["Items"]
        expect([i["pk"]["S"] for i in items] == ["job#b", "job#a"], f"query gave {items}")


def receive_one(sqs, queue_url: str, timeout: float = 10, **kwargs) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"], AttributeNames=["All"],
                                   **kwargs).get("Messages", [])
        # The bucket's notification configuration may announce itself with S3's test event.
        if msgs and '"s3:TestEvent"' in msgs[0].get("Body", ""):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msgs[0]["ReceiptHandle"])
            continue
        if msgs:
            return msgs[0]
    return None


def check_messaging(sns, sqs, out: dict, params: dict) -> None:
    topic, queue, dlq = out["TopicArn"], out["QueueUrl"], out["DeadLetterQueueUrl"]
    max_receives = int(params.get("MaxReceiveCount", "5"))
    with step("sns/sqs: topic, subscription and queue configuration"):
        tattrs = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
        # The topic's own key (S3 publishes the drops to it): Ref gives the key id, the output its ARN.
        key_id = out["TopicKeyArn"].rsplit("/", 1)[-1]
        expect(tattrs.get("KmsMasterKeyId") in (key_id, out["TopicKeyArn"]), f"topic key {tattrs.get('KmsMasterKeyId')}")
        subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        expect([s["Endpoint"] for s in subs] == [out["QueueArn"]], f"subscriptions {subs}")
        sattrs = sns.get_subscription_attributes(SubscriptionArn=subs[0]["SubscriptionArn"])["Attributes"]
        expect(sattrs.get("RawMessageDelivery") == "true", f"RawMessageDelivery {sattrs.get('RawMessageDelivery')}")
        q = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        expect(q.get("SqsManagedSseEnabled") == "true", f"queue SSE {q.get('SqsManagedSseEnabled')}")
        expect(q.get("VisibilityTimeout") == params.get("QueueVisibilityTimeoutSeconds", "180"),
               f"visibility {q.get('VisibilityTimeout')}")
        redrive = json.loads(q["RedrivePolicy"])
        expect(redrive["deadLetterTargetArn"] == out["DeadLetterQueueArn"]
               and int(redrive["maxReceiveCount"]) == max_receives, f"redrive {redrive}")
        policy = json.loads(q["Policy"])
        expect(out["TopicArn"] in json.dumps(policy) and "sqs:SendMessage" in json.dumps(policy),
               f"queue policy {policy}")
        d = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]
        expect(d.get("SqsManagedSseEnabled") == "true", f"DLQ SSE {d.get('SqsManagedSseEnabled')}")
        expect(d.get("MessageRetentionPeriod") == "1209600", f"DLQ retention {d.get('MessageRetentionPeriod')}")

    body = json.dumps({"job_id": str(uuid.uuid4()), "kind": "smoke"})
    attrs = {
        "correlation_id": {"DataType": "String", "StringValue": str(uuid.uuid4())},
        "attempt": {"DataType": "Number", "StringValue": "1"},
    }
    with step("sns -> sqs: publish, receive the raw body with its message attributes"):
        sns.publish(TopicArn=topic, Message=body, MessageAttributes=attrs)
        msg = receive_one(sqs, queue)
        expect(msg is not None, "nothing arrived on the queue within 10 s")
        expect(msg["Body"] == body, f"body is not raw: {msg['Body'][:200]}")
        got = {k: {"DataType": v["DataType"], "StringValue": v["StringValue"]}
               for k, v in msg.get("MessageAttributes", {}).items()}
        expect(got == attrs, f"message attributes {got}, want {attrs}")
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=msg["ReceiptHandle"])

    poison = json.dumps({"job_id": str(uuid.uuid4()), "kind": "poison"})
    with step(f"sqs: a message received {max_receives} times moves to the DLQ"):
        sns.publish(TopicArn=topic, Message=poison)
        receives = 0
        # VisibilityTimeout=0 on receive: the message is back at once, like a worker that failed.
        while receives <= max_receives:
            msg = receive_one(sqs, queue, timeout=3, VisibilityTimeout=0)
            if msg is None:
                break
            expect(msg["Body"] == poison, f"unexpected message {msg['Body'][:200]}")
            receives += 1
        expect(receives == max_receives, f"received {receives} times, want {max_receives}")
        dead = receive_one(sqs, dlq)
        expect(dead is not None and dead["Body"] == poison, f"DLQ gave {dead}")
        sqs.delete_message(QueueUrl=dlq, ReceiptHandle=dead["ReceiptHandle"])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    c = clients()
    started = time.monotonic()
    try:
        out, params = stack_info(c["cloudformation"], argv[0])
        check_s3(c["s3"], out, params)
        check_dynamodb(c["dynamodb"], out)
        check_messaging(c["sns"], c["sqs"], out, params)
    except (CheckFailed, ClientError, KeyError) as e:
        print(f"FAIL {type(e).__name__}: {e}", flush=True)
        return 1
    print(f"all checks passed for stack {argv[0]} in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
