//! The stdio transport's framing, in front of rmcp: one JSON-RPC message per line in,
//! and a reply to every line that rmcp would drop or answer without its id (a line that
//! is not JSON gets `-32700`, a request that is not valid JSON-RPC gets `-32600` with its
//! id). rmcp's own output and these replies share stdout line by line.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Pipe size between the framing tasks and rmcp; a message larger than this just waits.
const PIPE_BYTES: usize = 1 << 16;

pub struct Stdio {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Stdio {
    /// Starts the framing; rmcp is served on the returned pipe pair.
    pub fn start<R, W>(input: R, output: W) -> (Stdio, (DuplexStream, DuplexStream))
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (rmcp_in, mut to_rmcp) = tokio::io::duplex(PIPE_BYTES);
        let (from_rmcp, rmcp_out) = tokio::io::duplex(PIPE_BYTES);
        let (lines, mut outgoing) = mpsc::channel::<String>(64);

        let replies = lines.clone();
        let reader = tokio::spawn(async move {
            let mut input = BufReader::new(input).lines();
            while let Ok(Some(line)) = input.next_line().await {
                if line.trim().is_empty() {
                    continue;
                }
                match refusal(&line) {
                    Some(reply) => {
                        if replies.send(reply.to_string()).await.is_err() {
                            break;
                        }
                    }
                    None => {
                        let forwarded = async {
                            to_rmcp.write_all(line.as_bytes()).await?;
                            to_rmcp.write_all(b"\n").await?;
                            to_rmcp.flush().await
                        };
                        if forwarded.await.is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping `to_rmcp` tells rmcp the client has gone.
        });

        tokio::spawn(async move {
            let mut from_rmcp = BufReader::new(from_rmcp).lines();
            while let Ok(Some(line)) = from_rmcp.next_line().await {
                if lines.send(line).await.is_err() {
                    break;
                }
            }
        });

        let writer = tokio::spawn(async move {
            let mut output = output;
            while let Some(line) = outgoing.recv().await {
                let written = async {
                    output.write_all(line.as_bytes()).await?;
                    output.write_all(b"\n").await?;
                    output.flush().await
                };
                if written.await.is_err() {
                    break;
                }
            }
        });

        (Stdio { reader, writer }, (rmcp_in, rmcp_out))
    }

    /// After rmcp has stopped: stop reading and write out every reply still queued.
    pub async fn finish(self) {
        self.reader.abort();
        let _ = self.writer.await;
    }
}

/// The reply to a line rmcp cannot take, or `None` to hand it on.
fn refusal(line: &str) -> Option<Value> {
    let value: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Some(error(
                Value::Null,
                -32700,
                format!("Parse error: the line is not valid JSON ({e})"),
            ));
        }
    };
    if serde_json::from_value::<rmcp::model::ClientJsonRpcMessage>(value.clone()).is_ok() {
        return None;
    }
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let message = match value.get("method").and_then(Value::as_str) {
        Some(method) => format!("Invalid request: `{method}` has malformed `params`"),
        None if value.is_object() => {
            "Invalid request: expected a JSON-RPC 2.0 request with `jsonrpc`, `method` and `id`"
                .to_string()
        }
        None => "Invalid request: expected one JSON-RPC message (an object) per line".to_string(),
    };
    let code = if value.get("method").is_some() {
        -32602
    } else {
        -32600
    };
    Some(error(id, code, message))
}

fn error(id: Value, code: i64, message: String) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_rmcp_cannot_take_get_a_reply_with_their_id() {
        let bad = refusal("{not json").expect("a reply");
        assert_eq!(bad["error"]["code"], -32700);
        assert!(bad["id"].is_null());
        let params = refusal(r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":5}"#)
            .expect("a reply");
        assert_eq!(params["id"], 9);
        assert_eq!(params["error"]["code"], -32602);
        let shape = refusal(r#"{"id":"x"}"#).expect("a reply");
        assert_eq!(shape["id"], "x");
        assert_eq!(shape["error"]["code"], -32600);
        assert!(refusal(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_none());
        assert!(refusal(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_none());
    }
}
