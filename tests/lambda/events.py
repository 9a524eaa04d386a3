"""Lambda events for tests/lambda/invoke.sh, shaped as AWS delivers them.

    events.py api METHOD PATH SUB [IMAGE] [CALLBACK_URL]
                                            an API Gateway HTTP API (payload 2.0) event, with the JWT
                                            authorizer's claims; IMAGE becomes a base64 body, and
                                            CALLBACK_URL the Callback-Url header
    events.py sqs QUEUE_URL                 receives the queue's messages and prints them as the
                                            SQS event Lambda's event source mapping would send
    events.py check-api STATUS [PATH=VALUE ...] < response
                                            asserts on a function's API Gateway response; PATH is
                                            dotted, `*` matching any list element
    events.py receiver PORT FILE            a webhook receiver on 127.0.0.1:PORT: answers 200 and
                                            appends each call (headers and body) to FILE as a
                                            JSON line

Runs with the LocalStack venv's python (boto3), with AWS_ENDPOINT_URL pointing at LocalStack.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid


def api_event(method: str, path: str, sub: str, image: str | None, callback: str | None = None) -> dict:
    now = int(time.time() * 1000)
    event = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"accept": "application/json", "user-agent": "labelq-invoke-test"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "labelqapi",
            "authorizer": {"jwt": {"claims": {"sub": sub, "iss": "https://cognito-idp.local"}, "scopes": []}},
            "domainName": "labelqapi.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "labelqapi",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "labelq-invoke-test"},
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": now,
        },
        "isBase64Encoded": False,
    }
    if image:
        with open(image, "rb") as f:
            event["body"] = base64.b64encode(f.read()).decode()
        event["isBase64Encoded"] = True
        event["headers"]["content-type"] = "image/png" if image.endswith(".png") else "image/jpeg"
    if callback:
        event["headers"]["callback-url"] = callback
    return event


def receiver(port: int, record: str) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            call = {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode()}
            with open(record, "a") as f:
                f.write(json.dumps(call) + "\n")
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def sqs_event(queue_url: str) -> dict:
    import boto3

    sqs = boto3.client("sqs")
    deadline = time.time() + 20
    messages = []
    while not messages and time.time() < deadline:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
            MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"],
        ).get("Messages", [])
    if not messages:
        sys.exit("events.py: no message arrived on the queue")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    records = []
    for m in messages:
        attributes = {
            name: {"stringValue": a.get("StringValue"), "dataType": a["DataType"],
                   "stringListValues": [], "binaryListValues": []}
            for name, a in m.get("MessageAttributes", {}).items()
        }
        records.append({
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": attributes,
            "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": arn,
            "awsRegion": arn.split(":")[3],
        })
    return {"Records": records}


def check_api(expected_status: int, assertions: list[str]) -> None:
    response = json.load(sys.stdin)
    status = response.get("statusCode")
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    if status != expected_status:
        sys.exit(f"events.py: expected status {expected_status}, got {status}: {body}")
    document = json.loads(body) if body else {}
    for assertion in assertions:
        path, _, want = assertion.partition("=")
        found = lookup(document, path.split("."))
        if want not in [str(v) for v in found]:
            sys.exit(f"events.py: {path} is {found!r}, expected {want!r}: {body[:500]}")
    print(json.dumps(document))


def lookup(value, parts: list[str]) -> list:
    """The values at a dotted path; `*` matches every element of a list."""
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if head == "*" and isinstance(value, list):
        return [v for item in value for v in lookup(item, rest)]
    if isinstance(value, list):
        return lookup(value[int(head)], rest)
    if isinstance(value, dict) and head in value:
        return lookup(value[head], rest)
    return []


def main() -> None:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "api":
        method, path, sub = args[:3]
        image, callback = (args[3:] + [None, None])[:2]
        print(json.dumps(api_event(method, path, sub, image, callback)))
    elif command == "sqs":
        print(json.dumps(sqs_event(args[0])))
    elif command == "check-api":
        check_api(int(args[0]), args[1:])
    elif command == "receiver":
        receiver(int(args[0]), args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
