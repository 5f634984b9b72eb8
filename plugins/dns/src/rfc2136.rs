//! RFC 2136 updates and plain queries with hickory. Messages are built here, not with
//! hickory's helpers, so that a replacement is one atomic UPDATE: an optional prerequisite
//! (the rrset holds exactly what was read), the rrset's deletion and the new records.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hickory_client::client::Client;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::udp::UdpClientStream;
use hickory_proto::xfer::{DnsHandle, FirstAnswer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use drover_api::{ActionError, ActionSpec, Plan, SecretRef, StepContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RecordKind {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "CNAME")]
    Cname,
    #[serde(rename = "TXT")]
    Txt,
}

impl RecordKind {
    fn rtype(self) -> RecordType {
        match self {
            RecordKind::A => RecordType::A,
            RecordKind::Aaaa => RecordType::AAAA,
            RecordKind::Cname => RecordType::CNAME,
            RecordKind::Txt => RecordType::TXT,
        }
    }

    fn rdata(self, value: &str) -> Result<RData, ActionError> {
        let bad = |what: &str| ActionError::permanent(format!("`{value}` is not {what}"));
        Ok(match self {
            RecordKind::A => RData::A(A(value.parse().map_err(|_| bad("an IPv4 address"))?)),
            RecordKind::Aaaa => RData::AAAA(AAAA(value.parse().map_err(|_| bad("an IPv6 address"))?)),
            RecordKind::Cname => RData::CNAME(CNAME(Name::from_ascii(value).map_err(|_| bad("a DNS name"))?)),
            RecordKind::Txt => RData::TXT(TXT::new(vec![value.to_string()])),
        })
    }
}

fn text_of(r: &RData) -> Option<String> {
    Some(match r {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(c) => c.0.to_string(),
        RData::TXT(t) => {
            t.txt_data().iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>().join("")
        }
        _ => return None,
    })
}

/// An rrset's values (as text) and TTL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rrset {
    pub values: Vec<String>,
    pub ttl: u32,
}

impl Rrset {
    pub fn same(&self, other: &Rrset) -> bool {
        same_values(&self.values, &other.values) && (self.values.is_empty() || self.ttl == other.ttl)
    }
}

/// Equal as sets, ignoring order and a trailing dot on names.
pub fn same_values(a: &[String], b: &[String]) -> bool {
    let norm = |v: &[String]| {
        let mut v: Vec<String> = v.iter().map(|s| s.trim_end_matches('.').to_ascii_lowercase()).collect();
        v.sort();
        v.dedup();
        v
    };
    norm(a) == norm(b)
}

fn name(text: &str) -> Result<Name, ActionError> {
    let mut n = Name::from_str(text).map_err(|e| ActionError::permanent(format!("`{text}` is not a DNS name: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// What talking to a DNS server failed with, as data: a TSIG problem is told apart from a
/// server that does not answer by its variant, not by its text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DnsError {
    /// No connection could be set up.
    #[error("DNS server {server}: {cause}")]
    Unreachable { server: SocketAddr, cause: String },
    /// An answer without a signature to a signed request: forged, or from a server that does
    /// not know the key. Whether an update was applied is unknown; nothing unsigned is believed.
    #[error("DNS server {server} answered without a TSIG signature; the answer is not trusted")]
    Unsigned { server: SocketAddr },
    #[error("DNS server {server} did not accept the TSIG signature: {cause}")]
    BadSignature { server: SocketAddr, cause: String },
    #[error("DNS server {server} did not answer: {cause}")]
    NoAnswer { server: SocketAddr, cause: String },
    #[error("DNS server {server}: {cause}")]
    Transport { server: SocketAddr, cause: String },
}

impl DnsError {
    /// hickory reports these only in its error's text: read it once, here.
    fn classify(server: SocketAddr, text: String) -> DnsError {
        let lower = text.to_lowercase();
        if lower.contains("missing tsig") {
            DnsError::Unsigned { server }
        } else if ["tsig", "signature", "badsig", "badkey"].iter().any(|w| lower.contains(w)) {
            DnsError::BadSignature { server, cause: text }
        } else if lower.contains("timed out") || lower.contains("timeout") {
            DnsError::NoAnswer { server, cause: text }
        } else {
            DnsError::Transport { server, cause: text }
        }
    }

    /// A problem with the TSIG key rather than with reaching the server.
    pub fn is_tsig(&self) -> bool {
        matches!(self, DnsError::Unsigned { .. } | DnsError::BadSignature { .. })
    }
}

impl From<DnsError> for ActionError {
    fn from(e: DnsError) -> ActionError {
        let message = e.to_string();
        match e {
            DnsError::Unsigned { .. } | DnsError::BadSignature { .. } => ActionError::permanent(message),
            DnsError::Unreachable { .. } => {
                ActionError::retryable(message).with_hint("check the server address and that it runs")
            }
            DnsError::NoAnswer { .. } => {
                ActionError::retryable(message).with_hint("check that the server runs and that UDP reaches it")
            }
            DnsError::Transport { .. } => ActionError::retryable(message),
        }
    }
}

async fn connect(server: SocketAddr, timeout: Duration, signer: Option<TSigner>) -> Result<Client, DnsError> {
    let mut builder = UdpClientStream::builder(server, TokioRuntimeProvider::default()).with_timeout(Some(timeout));
    if let Some(s) = signer {
        builder = builder.with_signer(Some(Arc::new(s)));
    }
    let (client, bg) =
        Client::connect(builder.build()).await.map_err(|e| DnsError::Unreachable { server, cause: e.to_string() })?;
    tokio::spawn(bg);
    Ok(client)
}

/// DNS messages in flight, by server, shared by every step of the process: a fleet's 500
/// switches sent at once overflowed the server's UDP receive buffer, and each datagram dropped
/// cost a whole timeout (5 s).
static IN_FLIGHT: drover_api::Gates = drover_api::Gates::new();

/// `max_in_flight` unless set.
pub const MAX_IN_FLIGHT: usize = 16;

/// Messages in flight to `server` at most (its site's `max_in_flight`); the first to set it
/// for a server sets it for the process.
pub fn limit_in_flight(server: SocketAddr, turns: usize) {
    IN_FLIGHT.of(&server.to_string(), turns);
}

async fn exchange(client: &Client, server: SocketAddr, message: Message) -> Result<Message, DnsError> {
    let gate = IN_FLIGHT.of(&server.to_string(), MAX_IN_FLIGHT);
    let _turn = gate.acquire().await.expect("the gate is never closed");
    match client.send(message).first_answer().await {
        Ok(resp) => Ok(resp.into_message()),
        Err(e) => Err(DnsError::classify(server, e.to_string())),
    }
}

/// An unsigned query of one rrset.
pub async fn query(server: SocketAddr, fqdn: &str, kind: RecordKind, timeout: Duration) -> Result<Rrset, ActionError> {
    let client = connect(server, timeout, None).await?;
    let mut m = Message::new();
    m.set_id(rand_id()).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(false);
    m.add_query(Query::query(name(fqdn)?, kind.rtype()));
    let resp = exchange(&client, server, m).await?;
    match resp.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        ResponseCode::Refused => {
            return Err(ActionError::permanent(format!("DNS server {server} refused to answer for {fqdn} (REFUSED)"))
                .with_hint("is this server authoritative for the zone?"));
        }
        other => return Err(ActionError::retryable(format!("DNS server {server} answered {other} for {fqdn}"))),
    }
    let records: Vec<&Record> = resp.answers().iter().filter(|r| r.record_type() == kind.rtype()).collect();
    Ok(Rrset {
        values: records.iter().filter_map(|r| text_of(r.data())).collect(),
        ttl: records.first().map(|r| r.ttl()).unwrap_or(0),
    })
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7) & 0xffff)
        as u16
}

/// One zone on one primary server, with the TSIG key that may update it.
pub struct Authority {
    server: SocketAddr,
    zone: Name,
    key_name: String,
    key_ref: String,
    signer: TSigner,
    timeout: Duration,
}

impl Authority {
    pub fn new(
        server: SocketAddr,
        zone: &str,
        key_name: &str,
        algorithm: &str,
        key: &SecretRef,
        timeout: Duration,
    ) -> Result<Authority, ActionError> {
        let alg = match algorithm.to_ascii_lowercase().as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(ActionError::permanent(format!("TSIG algorithm `{other}` is not supported"))
                    .with_hint("use hmac-sha256, hmac-sha384 or hmac-sha512"));
            }
        };
        let secret = key.resolve()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(secret.expose().trim()).map_err(|_| {
            ActionError::permanent(format!("the TSIG key in {key} is not base64"))
                .with_hint("store the `secret` of `tsig-keygen` output, e.g. `K2F...=`")
        })?;
        let signer = TSigner::new(bytes, alg, name(key_name)?, 300)
            .map_err(|e| ActionError::permanent(format!("TSIG key `{key_name}`: {e}")))?;
        Ok(Authority {
            server,
            zone: name(zone)?,
            key_name: key_name.to_string(),
            key_ref: key.to_string(),
            signer,
            timeout,
        })
    }

    pub fn zone(&self) -> String {
        self.zone.to_string()
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The zone's SOA serial; errors explain a zone the server does not serve.
    pub async fn soa(&self) -> Result<u32, ActionError> {
        let client = connect(self.server, self.timeout, None).await?;
        let mut m = Message::new();
        m.set_id(rand_id()).set_message_type(MessageType::Query).set_op_code(OpCode::Query);
        m.add_query(Query::query(self.zone.clone(), RecordType::SOA));
        let resp = exchange(&client, self.server, m).await?;
        let soa = resp.answers().iter().find_map(|r| match r.data() {
            RData::SOA(s) => Some(s.serial()),
            _ => None,
        });
        match (resp.response_code(), soa, resp.authoritative()) {
            (ResponseCode::NoError, Some(serial), true) => Ok(serial),
            (code, _, _) => Err(ActionError::permanent(format!(
                "DNS server {} is not authoritative for zone {} (answer: {code})",
                self.server, self.zone
            ))
            .with_hint("point the site's dns.server at the zone's primary and check dns.zone")),
        }
    }

    /// Read an rrset from the primary; a name outside the zone is refused before any query.
    pub async fn lookup(&self, fqdn: &str, kind: RecordKind) -> Result<Rrset, ActionError> {
        if !self.zone.zone_of(&name(fqdn)?) {
            return Err(self.explain(ResponseCode::NotZone, fqdn));
        }
        query(self.server, fqdn, kind, self.timeout).await
    }

    fn update_message(&self) -> Message {
        let mut m = Message::new();
        m.set_id(rand_id())
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        let mut zone = Query::new();
        zone.set_name(self.zone.clone()).set_query_class(DNSClass::IN).set_query_type(RecordType::SOA);
        m.add_zone(zone);
        m
    }

    async fn send_update(&self, m: Message) -> Result<ResponseCode, ActionError> {
        let client = connect(self.server, self.timeout, Some(self.signer.clone())).await?;
        let resp = exchange(&client, self.server, m).await.map_err(|e| self.explain_transport(e))?;
        Ok(resp.response_code())
    }

    fn explain_transport(&self, e: DnsError) -> ActionError {
        if !e.is_tsig() {
            return e.into();
        }
        ActionError::permanent(format!("{e} (key `{}` from {})", self.key_name, self.key_ref)).with_hint(format!(
            "check the secret in {} and the key name against the server's configuration",
            self.key_ref
        ))
    }

    fn explain(&self, code: ResponseCode, what: &str) -> ActionError {
        match code {
            ResponseCode::NotAuth => ActionError::permanent(format!(
                "DNS server {} rejected the update of {what}: NOTAUTH (BADSIG/BADKEY: key `{}` from {} is not accepted)",
                self.server, self.key_name, self.key_ref
            ))
            .with_hint(format!("check the secret in {} and the key name against the server's configuration", self.key_ref)),
            ResponseCode::Refused => ActionError::permanent(format!(
                "DNS server {} refused the update of {what} (REFUSED): key `{}` may not update zone {}",
                self.server, self.key_name, self.zone
            ))
            .with_hint("the zone's update policy must allow this key (BIND: allow-update { key ...; })"),
            ResponseCode::NotZone => ActionError::permanent(format!("{what} is not inside zone {} (NOTZONE)", self.zone))
                .with_hint("check the record name and the site's dns.zone"),
            ResponseCode::NXRRSet | ResponseCode::YXRRSet => ActionError::permanent(format!(
                "{what} changed between reading and updating it ({code}); nothing was changed"
            ))
            .with_hint("someone else is changing this record; check it, then run again"),
            ResponseCode::ServFail => ActionError::retryable(format!("DNS server {} failed the update of {what} (SERVFAIL)", self.server)),
            other => ActionError::permanent(format!("DNS server {} answered {other} to the update of {what}", self.server)),
        }
    }

    /// Prove the key is accepted without changing anything: an UPDATE whose prerequisite
    /// cannot hold. NXRRSET means the signature was good; NOTAUTH/REFUSED mean it was not.
    pub async fn prove_key(&self) -> Result<(), ActionError> {
        let mut m = self.update_message();
        let probe = name(&format!("_drover-key-check.{}", self.zone))?;
        let mut pre = Record::from_rdata(probe, 0, RData::TXT(TXT::new(vec![format!("{}", rand_id())])));
        pre.set_dns_class(DNSClass::IN);
        m.add_pre_requisite(pre);
        match self.send_update(m).await? {
            ResponseCode::NXRRSet => Ok(()),
            code => Err(self.explain(code, "a key check")),
        }
    }

    /// Replace the rrset atomically; with `guard`, only if it still holds exactly that.
    pub async fn replace(
        &self,
        fqdn: &str,
        kind: RecordKind,
        want: &Rrset,
        guard: Option<&Rrset>,
    ) -> Result<(), ActionError> {
        let owner = name(fqdn)?;
        if !self.zone.zone_of(&owner) {
            return Err(self.explain(ResponseCode::NotZone, fqdn));
        }
        let mut m = self.update_message();
        match guard {
            Some(g) if g.values.is_empty() => {
                // RFC 2136 2.4.3: the rrset does not exist.
                let mut pre = Record::update0(owner.clone(), 0, kind.rtype());
                pre.set_dns_class(DNSClass::NONE);
                m.add_pre_requisite(pre);
            }
            Some(g) => {
                // RFC 2136 2.4.2: the rrset exists with exactly these values.
                for v in &g.values {
                    let mut pre = Record::from_rdata(owner.clone(), 0, kind.rdata(v)?);
                    pre.set_dns_class(DNSClass::IN);
                    m.add_pre_requisite(pre);
                }
            }
            None => {}
        }
        let mut delete = Record::update0(owner.clone(), 0, kind.rtype());
        delete.set_dns_class(DNSClass::ANY);
        m.add_update(delete);
        for v in &want.values {
            let mut add = Record::from_rdata(owner.clone(), want.ttl, kind.rdata(v)?);
            add.set_dns_class(DNSClass::IN);
            m.add_update(add);
        }
        match self.send_update(m).await? {
            ResponseCode::NoError => Ok(()),
            code => Err(self.explain(code, &format!("{fqdn} {kind:?}"))),
        }
    }
}

/// `dns.rfc2136.set`: an RFC 2136 primary, waited on until it serves an update.
pub struct Primary {
    auth: Authority,
    propagation: Duration,
}

#[async_trait::async_trait]
impl crate::set::Backend for Primary {
    const SPEC: ActionSpec = ActionSpec {
        name: "dns.rfc2136.set",
        summary: "Replace a DNS rrset through an RFC 2136 update signed with TSIG, then wait until it is served",
        outputs: crate::set::OUTPUTS,
        side_effects: true,
        undo: true,
        open_outputs: false,
        sites: &["site"],
        rpo_output: None,
    };
    type Store = Primary;

    async fn open(ctx: &StepContext, site: &str, propagation: Option<Duration>) -> Result<Primary, ActionError> {
        Ok(Primary { auth: crate::authority(ctx, site)?, propagation: propagation.unwrap_or(crate::set::PROPAGATION) })
    }

    async fn access(store: &Primary, plan: Plan, name: &str, kind: RecordKind) -> Result<(Plan, Rrset), Plan> {
        let auth = &store.auth;
        let plan = match auth.soa().await {
            Ok(serial) => {
                plan.check("zone served", true, format!("{} serial {serial} at {}", auth.zone(), auth.server()))
            }
            Err(e) => return Err(plan.check("zone served", false, e.message)),
        };
        let key = auth.prove_key().await;
        let plan = plan.check(
            "TSIG key accepted",
            key.is_ok(),
            key.err().map(|e| e.message).unwrap_or_else(|| auth.key_name().to_string()),
        );
        match auth.lookup(name, kind).await {
            Ok(current) => Ok((plan, current)),
            Err(e) => Err(plan.check("record readable", false, e.message)),
        }
    }
}

#[async_trait::async_trait]
impl crate::set::RecordStore for Primary {
    async fn current(&self, name: &str, kind: RecordKind) -> Result<Rrset, ActionError> {
        self.auth.lookup(name, kind).await
    }

    async fn write(
        &self,
        _: &StepContext,
        name: &str,
        kind: RecordKind,
        want: &Rrset,
        guard: Option<&Rrset>,
    ) -> Result<(), ActionError> {
        self.auth.replace(name, kind, want, guard).await
    }

    async fn settle(&self, ctx: &StepContext, name: &str, kind: RecordKind, want: &Rrset) -> Result<(), ActionError> {
        crate::set::read_back(self, ctx, name, kind, want, self.propagation).await
    }
}
