//! A small authoritative DNS server for one zone, over UDP, that takes RFC 2136 updates signed
//! with TSIG — the lab's stand-in when BIND is not installed. It answers what BIND answers for
//! the parts drover uses: queries (AA, NXDOMAIN, REFUSED outside the zone), unsigned or badly
//! signed updates refused (REFUSED / NOTAUTH), RFC 2136 prerequisites (NXRRSET, YXRRSET,
//! NXDOMAIN, YXDOMAIN), rrset deletion and additions in one atomic update, the SOA serial
//! bumped on change, and responses signed with the request's MAC.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hickory_proto::dnssec::rdata::tsig::{TSIG, TsigAlgorithm, make_tsig_record, message_tbs};
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

type Key = (Name, RecordType);

/// The zone's records: one rrset per owner name and type.
struct Zone {
    origin: Name,
    rrsets: BTreeMap<Key, (u32, Vec<RData>)>,
    /// Answer every signed update with this code, changing nothing (fault tests).
    failing_updates: Option<ResponseCode>,
}

impl Zone {
    fn name_in_use(&self, name: &Name) -> bool {
        self.rrsets.keys().any(|(n, _)| n == name)
    }

    fn bump_serial(&mut self) {
        if let Some((_, soa)) = self.rrsets.get_mut(&(self.origin.clone(), RecordType::SOA))
            && let Some(RData::SOA(s)) = soa.first_mut()
        {
            *s = SOA::new(
                s.mname().clone(),
                s.rname().clone(),
                s.serial().wrapping_add(1),
                s.refresh(),
                s.retry(),
                s.expire(),
                s.minimum(),
            );
        }
    }
}

/// A running stand-in; dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Serve `zone` on 127.0.0.1:`port` (0 picks one) with A `records` (name, address) of TTL
    /// `ttl`, taking updates signed with the hmac-sha256 key `key_name` / base64 `secret`.
    pub async fn start(
        port: u16,
        zone: &str,
        key_name: &str,
        secret: &str,
        ttl: u32,
        records: &[(&str, &str)],
    ) -> Result<StandIn, String> {
        let origin = Name::from_ascii(zone).map_err(|e| format!("zone `{zone}`: {e}"))?;
        let key = base64::engine::general_purpose::STANDARD.decode(secret).map_err(|e| format!("TSIG secret: {e}"))?;
        let key_name = Name::from_ascii(key_name).map_err(|e| format!("key name `{key_name}`: {e}"))?;
        let signer = TSigner::new(key, TsigAlgorithm::HmacSha256, key_name, 300).map_err(|e| e.to_string())?;
        let ns = Name::from_ascii(format!("ns1.{zone}")).map_err(|e| e.to_string())?;
        let admin = Name::from_ascii(format!("admin.{zone}")).map_err(|e| e.to_string())?;
        let mut rrsets = BTreeMap::new();
        rrsets.insert(
            (origin.clone(), RecordType::SOA),
            (60, vec![RData::SOA(SOA::new(ns.clone(), admin, 1, 3600, 600, 86400, 60))]),
        );
        rrsets.insert((origin.clone(), RecordType::NS), (60, vec![RData::NS(NS(ns))]));
        for (name, address) in records {
            let owner = Name::from_ascii(name).map_err(|e| format!("record `{name}`: {e}"))?;
            let a = address.parse().map_err(|_| format!("`{address}` is not an IPv4 address"))?;
            rrsets.entry((owner, RecordType::A)).or_insert((ttl, vec![])).1.push(RData::A(a));
        }
        let zone = Arc::new(Mutex::new(Zone { origin, rrsets, failing_updates: None }));
        let socket = tokio::net::UdpSocket::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        let served = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = answer(&served, &signer, &buf[..n]) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        Ok(StandIn { addr, zone, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on answer every correctly signed update with `code` (signed, as a server
    /// whose zone journal is full answers SERVFAIL), changing nothing; `None` to stop.
    pub fn fail_updates_with(&self, code: Option<ResponseCode>) {
        self.zone.lock().expect("zone lock").failing_updates = code;
    }

    /// The values of one A rrset, as served now (for state comparisons).
    pub fn a_values(&self, name: &str) -> Vec<String> {
        let Ok(owner) = Name::from_ascii(name) else { return vec![] };
        let zone = self.zone.lock().expect("zone lock");
        zone.rrsets
            .get(&(owner, RecordType::A))
            .map(|(_, v)| v.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn reply_to(request: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(request.op_code() == OpCode::Query)
        .set_response_code(code);
    m.add_queries(request.queries().to_vec());
    m
}

/// The answer to one datagram; None for what cannot be parsed as a request (BIND drops those).
fn answer(zone: &Mutex<Zone>, signer: &TSigner, bytes: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let reply = match request.op_code() {
        OpCode::Query => query(&zone.lock().expect("zone lock"), &request),
        OpCode::Update => return update(zone, signer, &request, bytes),
        _ => reply_to(&request, ResponseCode::NotImp),
    };
    reply.to_vec().ok()
}

fn query(zone: &Zone, request: &Message) -> Message {
    let Some(q) = request.queries().first() else { return reply_to(request, ResponseCode::FormErr) };
    let name = q.name().to_lowercase();
    if !zone.origin.zone_of(&name) {
        return reply_to(request, ResponseCode::Refused);
    }
    let mut reply = reply_to(request, ResponseCode::NoError);
    match zone.rrsets.get(&(name.clone(), q.query_type())) {
        Some((ttl, values)) => {
            reply.add_answers(values.iter().map(|v| Record::from_rdata(name.clone(), *ttl, v.clone())));
        }
        None if zone.name_in_use(&name) => {}
        None => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
    }
    reply
}

fn update(zone: &Mutex<Zone>, signer: &TSigner, request: &Message, bytes: &[u8]) -> Option<Vec<u8>> {
    if request.signature().is_empty() {
        // BIND with `allow-update { key ...; }` refuses an unsigned update.
        return reply_to(request, ResponseCode::Refused).to_vec().ok();
    }
    let request_mac = match signer.verify_message_byte(None, bytes, true) {
        Ok((mac, window, _)) if window.contains(&now()) => mac,
        // Wrong key, bad MAC or a clock outside the fudge: NOTAUTH, unsigned (BADSIG/BADKEY/BADTIME).
        _ => return reply_to(request, ResponseCode::NotAuth).to_vec().ok(),
    };
    let code = {
        let mut zone = zone.lock().expect("zone lock");
        match zone.failing_updates {
            Some(code) => code,
            None => apply_update(&mut zone, request),
        }
    };
    let mut reply = reply_to(request, code);
    let pre = TSIG::new(signer.algorithm().clone(), now(), signer.fudge(), vec![], request.id(), 0, vec![]);
    let tbs = message_tbs(Some(&request_mac), &reply, &pre, signer.signer_name()).ok()?;
    let mac = signer.sign(&tbs).ok()?;
    reply.add_tsig(make_tsig_record(signer.signer_name().clone(), pre.set_mac(mac)));
    reply.to_vec().ok()
}

/// RFC 2136 §3: zone section, prerequisites, then every update or none.
fn apply_update(zone: &mut Zone, request: &Message) -> ResponseCode {
    match request.queries() {
        [z] if z.query_type() == RecordType::SOA && z.name().to_lowercase() == zone.origin => {}
        [_] => return ResponseCode::NotAuth,
        _ => return ResponseCode::FormErr,
    }
    // §3.2: prerequisites.
    let mut wanted: BTreeMap<Key, Vec<RData>> = BTreeMap::new();
    for p in request.prerequisites() {
        let name = p.name().to_lowercase();
        if !zone.origin.zone_of(&name) {
            return ResponseCode::NotZone;
        }
        let exists = zone.rrsets.contains_key(&(name.clone(), p.record_type()));
        match (p.dns_class(), p.record_type()) {
            (DNSClass::ANY, RecordType::ANY) if !zone.name_in_use(&name) => return ResponseCode::NXDomain,
            (DNSClass::ANY, t) if t != RecordType::ANY && !exists => return ResponseCode::NXRRSet,
            (DNSClass::NONE, RecordType::ANY) if zone.name_in_use(&name) => return ResponseCode::YXDomain,
            (DNSClass::NONE, t) if t != RecordType::ANY && exists => return ResponseCode::YXRRSet,
            (DNSClass::IN, t) => match p.data() {
                RData::Update0(_) | RData::NULL(_) => return ResponseCode::FormErr,
                d => wanted.entry((name, t)).or_default().push(d.clone()),
            },
            _ => {}
        }
    }
    for (key, values) in &wanted {
        let now: Vec<&RData> = zone.rrsets.get(key).map(|(_, v)| v.iter().collect()).unwrap_or_default();
        let same = now.len() == values.len() && values.iter().all(|v| now.contains(&v));
        if !same {
            return ResponseCode::NXRRSet;
        }
    }
    // §3.4.1: every update names a record inside the zone before anything changes.
    let updates = request.updates();
    if updates.iter().any(|u| !zone.origin.zone_of(&u.name().to_lowercase())) {
        return ResponseCode::NotZone;
    }
    let mut changed = false;
    for u in updates {
        let key = (u.name().to_lowercase(), u.record_type());
        let apex = key.0 == zone.origin;
        match u.dns_class() {
            DNSClass::ANY if u.record_type() == RecordType::ANY => {
                let before = zone.rrsets.len();
                zone.rrsets.retain(|(n, t), _| *n != key.0 || (apex && matches!(t, RecordType::SOA | RecordType::NS)));
                changed |= zone.rrsets.len() != before;
            }
            DNSClass::ANY => {
                if !(apex && matches!(key.1, RecordType::SOA | RecordType::NS)) {
                    changed |= zone.rrsets.remove(&key).is_some();
                }
            }
            DNSClass::NONE => {
                if let Some((_, values)) = zone.rrsets.get_mut(&key) {
                    let before = values.len();
                    values.retain(|v| v != u.data());
                    changed |= values.len() != before;
                    if values.is_empty() {
                        zone.rrsets.remove(&key);
                    }
                }
            }
            _ => {
                if matches!(u.data(), RData::Update0(_) | RData::NULL(_)) {
                    continue;
                }
                let (ttl, values) = zone.rrsets.entry(key).or_insert((u.ttl(), vec![]));
                *ttl = u.ttl();
                if !values.contains(u.data()) {
                    values.push(u.data().clone());
                    changed = true;
                }
            }
        }
    }
    if changed {
        zone.bump_serial();
    }
    ResponseCode::NoError
}
