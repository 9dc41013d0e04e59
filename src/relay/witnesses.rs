//! The relay asks its witnesses to cosign each checkpoint (C2SP
//! tlog-witness, client side).
//!
//! After each batch commits, the sequencer hands the batch's signed
//! checkpoint to [`Witnesses::cosign`]: every witness is asked in parallel
//! (`POST <url>/add-checkpoint`), each exchange bounded by the timeout, so
//! a witness that is down delays the batch's answers by the timeout at
//! most. The relay remembers each witness's size; on 409 it takes the
//! size from the answer and sends the consistency proof from there (once
//! more). Valid cosignatures (checked against the witness's key) are
//! appended to the checkpoint as signature lines; the stored and served
//! checkpoint is then the cosigned one.
//!
//! Witnesses are named `VKEY@URL` (`--witness`, or `witnesses = [...]` in
//! the relay's config file), the URL `http://host:port[/prefix]`.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Request};
use hyper_util::rt::TokioIo;
use sqlx::AnyPool;

use crate::log::cosignature::{self, WitnessKey};
use crate::log::note::{Note, Signature};
use crate::log::witness::{parse_size_body, AddCheckpoint};
use crate::log::{merkle, Checkpoint, Hash};
use crate::receipt::key_transition::TransitionProof;

/// Largest answer read from a witness.
const MAX_ANSWER: usize = 16 * 1024;

/// One witness: its key and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessEndpoint {
    /// The witness's cosignature/v1 key.
    pub key: WitnessKey,
    /// `host:port`.
    pub authority: String,
    /// Path prefix (empty or starting with `/`, no trailing `/`).
    pub prefix: String,
}

impl WitnessEndpoint {
    /// Parse `VKEY@http://host:port[/prefix]`.
    pub fn parse(s: &str) -> Result<WitnessEndpoint, String> {
        let at = s
            .find("@http")
            .ok_or_else(|| format!("{s:?}: expected VKEY@http://HOST:PORT"))?;
        let (vkey, url) = (&s[..at], &s[at + 1..]);
        let key = WitnessKey::parse(vkey).map_err(|e| format!("{vkey:?}: {e}"))?;
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?}: witnesses are reached over http:// (their answers are signed)")
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') || authority.contains('@') {
            return Err(format!("{url:?}: expected http://HOST:PORT"));
        }
        Ok(WitnessEndpoint {
            key,
            authority: authority.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// `VKEY@URL` again.
    pub fn encode(&self) -> String {
        format!("{}@http://{}{}", self.key, self.authority, self.prefix)
    }
}

/// The relay's witnesses, the quorum it aims for, and what it knows of
/// each witness's size.
pub struct Witnesses {
    endpoints: Vec<WitnessEndpoint>,
    quorum: usize,
    timeout: Duration,
    sizes: Mutex<Vec<Option<u64>>>,
}

impl Witnesses {
    /// The witnesses `endpoints`, aiming at `quorum` cosignatures per
    /// checkpoint, each exchange bounded by `timeout`.
    pub fn new(endpoints: Vec<WitnessEndpoint>, quorum: usize, timeout: Duration) -> Witnesses {
        let n = endpoints.len();
        Witnesses {
            endpoints,
            quorum,
            timeout,
            sizes: Mutex::new(vec![None; n]),
        }
    }

    /// The configured witnesses.
    pub fn endpoints(&self) -> &[WitnessEndpoint] {
        &self.endpoints
    }

    /// The quorum.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The witnesses' keys.
    pub fn keys(&self) -> Vec<WitnessKey> {
        self.endpoints.iter().map(|e| e.key.clone()).collect()
    }

    /// How many configured witnesses validly cosigned the signed
    /// checkpoint `note`.
    pub fn count(&self, note: &str) -> usize {
        Note::parse(note.as_bytes())
            .ok()
            .and_then(|n| cosignature::verified_cosignatures(&n, &self.keys()).ok())
            .map(|v| v.len())
            .unwrap_or(0)
    }

    /// Ask every witness to cosign `note` (the checkpoint `cp`, signed by
    /// the relay); consistency proofs are read from `pool`. Returns the
    /// note with the cosignatures obtained appended (the note itself when
    /// none was).
    pub async fn cosign(&self, note: &str, cp: &Checkpoint, pool: &AnyPool) -> String {
        let asks = self.endpoints.iter().enumerate().map(|(i, ep)| async move {
            match tokio::time::timeout(self.timeout, self.ask(i, ep, note, cp, pool)).await {
                Ok(Ok(line)) => Some(line),
                Ok(Err(why)) => {
                    tracing::warn!(witness = %ep.key.name(), size = cp.size, reason = %why, "no cosignature");
                    None
                }
                Err(_) => {
                    tracing::warn!(witness = %ep.key.name(), size = cp.size, "witness timed out");
                    None
                }
            }
        });
        let lines: Vec<Signature> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        if lines.len() < self.quorum {
            tracing::warn!(
                size = cp.size,
                cosignatures = lines.len(),
                quorum = self.quorum,
                "checkpoint below the witness quorum"
            );
        }
        if lines.is_empty() {
            return note.to_string();
        }
        cosignature::add_signatures(note, &lines).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot add cosignatures");
            note.to_string()
        })
    }

    /// Ask one witness; a witness that refuses the signature (403) while
    /// the log has key transitions is shown them first
    /// ([`Witnesses::follow`]) and asked once more.
    async fn ask(
        &self,
        i: usize,
        ep: &WitnessEndpoint,
        note: &str,
        cp: &Checkpoint,
        pool: &AnyPool,
    ) -> Result<Signature, String> {
        match self.add(i, ep, note, cp, pool).await {
            Err(Asked::Forbidden(why)) => {
                let transitions = super::store::key_transitions(pool)
                    .await
                    .map_err(|e| e.to_string())?;
                if transitions.is_empty() {
                    return Err(why);
                }
                self.follow(i, ep, &transitions, pool).await?;
                self.add(i, ep, note, cp, pool)
                    .await
                    .map_err(|e| e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }

    /// Show a witness the log's key transitions, oldest first (`POST
    /// <prefix>/add-key-transition`, docs/LOG.md §5.5). A witness that has
    /// not cosigned a transition's announcement yet is asked to first.
    async fn follow(
        &self,
        i: usize,
        ep: &WitnessEndpoint,
        transitions: &[TransitionProof],
        pool: &AnyPool,
    ) -> Result<(), String> {
        for t in transitions {
            let body = serde_json::to_string(t).map_err(|e| e.to_string())?;
            let (status, answer) = post(ep, "/add-key-transition", body.clone()).await?;
            let status = if status == 409 {
                // Not at the announcement: have it cosign it, then again.
                let n = Note::parse(t.checkpoint.as_bytes()).map_err(|e| e.to_string())?;
                let ann = Checkpoint::parse(n.text.as_bytes()).map_err(|e| e.to_string())?;
                self.add(i, ep, &t.checkpoint, &ann, pool)
                    .await
                    .map_err(|e| format!("cosigning the announcement at size {}: {e}", ann.size))?;
                post(ep, "/add-key-transition", body).await?.0
            } else {
                status
            };
            if status != 200 {
                return Err(format!(
                    "the witness refused the key transition at leaf {} ({status}): {}",
                    t.log_index,
                    String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim()
                ));
            }
            tracing::info!(witness = %ep.key.name(), index = t.log_index, "witness learnt a key transition");
        }
        Ok(())
    }

    /// One add-checkpoint exchange (with one retry after 409).
    async fn add(
        &self,
        i: usize,
        ep: &WitnessEndpoint,
        note: &str,
        cp: &Checkpoint,
        pool: &AnyPool,
    ) -> Result<Signature, Asked> {
        let text = cp.to_text().map_err(|e| e.to_string())?;
        let mut old = self.sizes.lock().expect("lock")[i].unwrap_or(0);
        for _ in 0..2 {
            if old > cp.size {
                return Err(Asked::Other(format!(
                    "the witness has size {old}, over this checkpoint's {} (another relay instance is ahead, or the log was rolled back)",
                    cp.size
                )));
            }
            let proof = if old == 0 || old == cp.size {
                Vec::new()
            } else {
                consistency_proof(pool, old, cp.size).await?
            };
            let body = AddCheckpoint {
                old_size: old,
                proof,
                checkpoint: note.to_string(),
            }
            .encode()
            .map_err(|e| e.to_string())?;
            let (status, answer) = post(ep, "/add-checkpoint", body).await?;
            match status {
                200 => {
                    let lines =
                        cosignature::parse_signature_lines(&answer).map_err(|e| e.to_string())?;
                    let line = lines
                        .into_iter()
                        .find(|l| ep.key.verify(&text, l).is_some())
                        .ok_or("the answer holds no valid cosignature by its key")?;
                    self.sizes.lock().expect("lock")[i] = Some(cp.size);
                    return Ok(line);
                }
                409 => {
                    old = parse_size_body(&answer).map_err(|e| e.to_string())?;
                    self.sizes.lock().expect("lock")[i] = Some(old);
                }
                s => {
                    let why = format!(
                        "refused with {s}: {}",
                        String::from_utf8_lossy(&answer[..answer.len().min(300)]).trim()
                    );
                    return Err(if s == 403 {
                        Asked::Forbidden(why)
                    } else {
                        Asked::Other(why)
                    });
                }
            }
        }
        Err(Asked::Other("the witness's size kept changing".into()))
    }
}

/// Why an exchange with a witness gave no cosignature.
#[derive(Debug)]
enum Asked {
    /// 403: the witness does not take the checkpoint's key.
    Forbidden(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Forbidden(s) | Asked::Other(s) => f.write_str(s),
        }
    }
}

impl From<String> for Asked {
    fn from(s: String) -> Asked {
        Asked::Other(s)
    }
}

impl From<&str> for Asked {
    fn from(s: &str) -> Asked {
        Asked::Other(s.to_string())
    }
}

/// The consistency proof from `size1` to `size2` from the stored nodes.
async fn consistency_proof(pool: &AnyPool, size1: u64, size2: u64) -> Result<Vec<Hash>, String> {
    let plan = merkle::consistency_plan(size1, size2).map_err(|e| e.to_string())?;
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let hashes = super::store::read_nodes(&mut conn, plan.nodes())
        .await
        .map_err(|e| e.to_string())?;
    plan.assemble(&hashes).map_err(|e| e.to_string())
}

/// `POST <prefix><path>` over plain HTTP/1.1: status and body.
async fn post(ep: &WitnessEndpoint, path: &str, body: String) -> Result<(u16, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(&ep.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", ep.authority))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(format!("{}{path}", ep.prefix))
        .header(header::HOST, &ep.authority)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let k = WitnessKey::new("w.example/w1", [7; 32]).unwrap();
        let ep = WitnessEndpoint::parse(&format!("{k}@http://127.0.0.1:8444")).unwrap();
        assert_eq!(ep.authority, "127.0.0.1:8444");
        assert_eq!(ep.prefix, "");
        assert_eq!(WitnessEndpoint::parse(&ep.encode()).unwrap(), ep);
        let ep = WitnessEndpoint::parse(&format!("{k}@http://w.example:80/witness/")).unwrap();
        assert_eq!(ep.prefix, "/witness");
        for bad in [
            format!("{k}"),
            format!("{k}@https://w.example:443"),
            format!("{k}@http://"),
            format!("{k}@http://w.example"),
            format!("{k}@http://u@w.example:80"),
            "x@http://w.example:80".to_string(),
        ] {
            assert!(WitnessEndpoint::parse(&bad).is_err(), "{bad}");
        }
    }
}
