-- wrk script: the streaming request in $STREAM_BODY on every call.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("STREAM_BODY")
