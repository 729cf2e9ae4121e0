//! Decoding the canonical encodings of [`crate::signed::Body`] types, for bytes that come back
//! from disk (the journal) or the network. Every length is checked against a limit before
//! anything is allocated, every tag is checked, and trailing bytes are an error.

use crate::audit::Verdict;
use crate::challenge::{Challenge, GaveUp, Task};
use crate::governance::{Choice, Kind, Proposal, Vote};
use crate::ledger::{
    AuditRequest, Bond, Fork, Governed, Input, MAX_GOVERNANCE, Observation, Observed, Report, TrustVector,
};
use crate::signed::{Body, Signed};
use thiserror::Error;

/// Most observations in one report.
pub const MAX_OBSERVATIONS: u64 = 1 << 16;
/// Most edges in one trust vector.
pub const MAX_EDGES: u64 = 1 << 16;
/// Longest string (parameter name, version).
pub const MAX_STRING: u64 = 1024;
/// The largest report body an equivocation proof holds (the live ledger takes no larger report).
pub const MAX_REPORT_BYTES: usize = 4 << 20;
/// The fewest bytes a [`Governed`] input takes: a trust vector with no edges (kind, signer,
/// epoch and a zero count, signature).
pub const MIN_GOVERNED: usize = 1 + 32 + 16 + 64;

/// Why bytes do not decode.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input ended inside `field`.
    #[error("truncated in {field}")]
    Truncated {
        /// Field being read.
        field: &'static str,
    },
    /// A count or length is over its limit.
    #[error("{field} = {value} is over the limit {limit}")]
    TooLong {
        /// Field.
        field: &'static str,
        /// Value read.
        value: u64,
        /// Limit.
        limit: u64,
    },
    /// An enum tag is unknown.
    #[error("unknown {field} tag {value}")]
    Tag {
        /// Field.
        field: &'static str,
        /// Tag read.
        value: u8,
    },
    /// A string is not UTF-8.
    #[error("{field} is not UTF-8")]
    Utf8 {
        /// Field.
        field: &'static str,
    },
    /// Bytes left after the value.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// A cursor over bytes.
pub struct Reader<'a> {
    b: &'a [u8],
    /// Inside a carried testimony: a report there carries only the subjects' admissions
    /// (never another testimony), so nesting (and the decoder's recursion) stops at one level.
    nested: bool,
}

impl<'a> Reader<'a> {
    /// Reads from `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, nested: false }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.b.len()
    }

    /// Fails when bytes are left.
    pub fn finish(&self) -> Result<(), Error> {
        if self.b.is_empty() { Ok(()) } else { Err(Error::Trailing(self.b.len())) }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        if self.b.len() < n {
            return Err(Error::Truncated { field });
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, field)?[0])
    }

    /// A little-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// An f64 from its bits.
    pub fn f64(&mut self, field: &'static str) -> Result<f64, Error> {
        Ok(f64::from_bits(self.u64(field)?))
    }

    /// N fixed bytes.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Error> {
        let b = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// A count checked against `limit` and against the bytes left (each item ≥ `min_item`
    /// bytes), before the caller allocates for it.
    pub fn count(&mut self, field: &'static str, limit: u64, min_item: usize) -> Result<usize, Error> {
        let n = self.u64(field)?;
        if n > limit {
            return Err(Error::TooLong { field, value: n, limit });
        }
        if n.saturating_mul(min_item as u64) > self.b.len() as u64 {
            return Err(Error::Truncated { field });
        }
        Ok(n as usize)
    }

    /// A length-prefixed UTF-8 string of at most [`MAX_STRING`] bytes.
    pub fn string(&mut self, field: &'static str) -> Result<String, Error> {
        let n = self.count(field, MAX_STRING, 1)?;
        let b = self.take(n, field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| Error::Utf8 { field })
    }
}

/// A type with a canonical decoding (the inverse of [`Body::encode`]).
pub trait Decode: Sized {
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error>;
}

impl Decode for Report {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let epoch = r.u64("report.epoch")?;
        let n = r.count("report.observations", MAX_OBSERVATIONS, 33)?;
        let mut observations = Vec::with_capacity(n);
        for _ in 0..n {
            let subject = r.array::<32>("observation.subject")?;
            let what = match r.u8("observation.kind")? {
                0 => Observed::Participated,
                1 => Observed::Missed,
                2 => Observed::ChallengePassed,
                3 => Observed::ChallengeFailed,
                4 => Observed::Anomaly { z: r.f64("observation.z")? },
                5 => Observed::Feedback { score: r.f64("observation.score")? },
                6 => Observed::ChallengeTimeout,
                7 => Observed::Uptime { fraction: r.f64("observation.fraction")? },
                8 => Observed::Staked { total: r.u64("observation.total")? },
                value => return Err(Error::Tag { field: "observation.kind", value }),
            };
            observations.push(Observation { subject, what });
        }
        let n = r.count("report.governance", MAX_GOVERNANCE as u64, MIN_GOVERNED)?;
        let mut governance = Vec::with_capacity(n);
        for _ in 0..n {
            governance.push(decode_governed(r)?);
        }
        Ok(Report { epoch, observations, governance })
    }
}

impl Decode for Task {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let subject = r.array("task.subject")?;
        let epoch = r.u64("task.epoch")?;
        let mut dim = |field| r.array::<4>(field).map(u32::from_le_bytes);
        let (rows, inner, cols) = (dim("task.rows")?, dim("task.inner")?, dim("task.cols")?);
        let challenge = Challenge {
            rows,
            inner,
            cols,
            seed: r.u64("task.seed")?,
            issued: r.u64("task.issued")?,
            deadline: r.u64("task.deadline")?,
        };
        Ok(Task { subject, epoch, challenge })
    }
}

impl Decode for GaveUp {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(GaveUp { task: decode_signed(r)? })
    }
}

impl Decode for TrustVector {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let epoch = r.u64("trust.epoch")?;
        let n = r.count("trust.edges", MAX_EDGES, 40)?;
        let mut edges = Vec::with_capacity(n);
        for _ in 0..n {
            edges.push((r.array::<32>("trust.node")?, r.f64("trust.weight")?));
        }
        Ok(TrustVector { epoch, edges })
    }
}

impl Decode for Bond {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(Bond { total: r.u64("bond.total")?, seq: r.u64("bond.seq")? })
    }
}

impl Decode for Proposal {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let kind = match r.u8("proposal.kind")? {
            0 => Kind::SetParameter { name: r.string("proposal.name")?, value: r.f64("proposal.value")? },
            1 => Kind::Ban { node: r.array::<32>("proposal.node")? },
            2 => Kind::Unban { node: r.array::<32>("proposal.node")? },
            3 => Kind::Upgrade { version: r.string("proposal.version")? },
            value => return Err(Error::Tag { field: "proposal.kind", value }),
        };
        Ok(Proposal {
            kind,
            opens: r.u64("proposal.opens")?,
            closes: r.u64("proposal.closes")?,
            nonce: r.u64("proposal.nonce")?,
        })
    }
}

impl Decode for AuditRequest {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        Ok(AuditRequest {
            subject: r.array::<32>("audit_request.subject")?,
            round: r.u64("audit_request.round")?,
            nonce: r.u64("audit_request.nonce")?,
        })
    }
}

impl Decode for Vote {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let proposal = r.array::<32>("vote.proposal")?;
        let choice = match r.u8("vote.choice")? {
            0 => Choice::Yes,
            1 => Choice::No,
            2 => Choice::Abstain,
            value => return Err(Error::Tag { field: "vote.choice", value }),
        };
        Ok(Vote { proposal, choice })
    }
}

impl Decode for Verdict {
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error> {
        let audit = r.array::<32>("verdict.audit")?;
        let subject = r.array::<32>("verdict.subject")?;
        let pass = match r.u8("verdict.pass")? {
            0 => false,
            1 => true,
            value => return Err(Error::Tag { field: "verdict.pass", value }),
        };
        Ok(Verdict { audit, subject, pass })
    }
}

/// `signer ‖ body ‖ signature`: how a signed message is stored.
pub fn encode_signed<T: Body>(s: &Signed<T>, out: &mut Vec<u8>) {
    out.extend_from_slice(&s.signer);
    s.body.encode(out);
    out.extend_from_slice(&s.signature);
}

/// The inverse of [`encode_signed`]. The signature is not checked here (the ledger does).
pub fn decode_signed<T: Decode>(r: &mut Reader<'_>) -> Result<Signed<T>, Error> {
    let signer = r.array::<32>("signer")?;
    let body = T::decode(r)?;
    let signature = r.array::<64>("signature")?;
    Ok(Signed { signer, body, signature })
}

/// A [`Governed`] input with its kind tag (how reports and the round protocol carry it).
pub fn encode_governed(g: &Governed, out: &mut Vec<u8>) {
    match g {
        Governed::Propose(p) => {
            out.push(0);
            encode_signed(p, out);
        }
        Governed::Vote(v) => {
            out.push(1);
            encode_signed(v, out);
        }
        Governed::Testimony(t) => {
            out.push(2);
            encode_signed(t, out);
        }
        Governed::RequestAudit(q) => {
            out.push(3);
            encode_signed(q, out);
        }
        Governed::Verdict(v) => {
            out.push(4);
            encode_signed(v, out);
        }
        Governed::Fork(f) => {
            out.push(5);
            encode_fork(f, out);
        }
        Governed::Trust(t) => {
            out.push(6);
            encode_signed(t, out);
        }
        Governed::GaveUp(g) => {
            out.push(7);
            encode_signed(g, out);
        }
    }
}

/// A fork proof: the signer, then each report as `body length u64 ‖ body ‖ signature`.
pub fn encode_fork(f: &Fork, out: &mut Vec<u8>) {
    out.extend_from_slice(&f.signer);
    for (body, sig) in &f.reports {
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(sig);
    }
}

/// The inverse of [`encode_fork`]. The reports' bodies are not decoded (a proof checks them by
/// their signatures and their first 8 bytes), so nothing nests.
fn decode_fork(r: &mut Reader<'_>) -> Result<Fork, Error> {
    let signer = r.array::<32>("fork.signer")?;
    let mut report = || -> Result<(Vec<u8>, [u8; 64]), Error> {
        let n = r.u64("fork.body_len")?;
        let limit = r.remaining().min(MAX_REPORT_BYTES);
        let len = usize::try_from(n).ok().filter(|n| *n <= limit).ok_or(Error::TooLong {
            field: "fork.body",
            value: n,
            limit: limit as u64,
        })?;
        let body = r.take(len, "fork.body")?.to_vec();
        Ok((body, r.array::<64>("fork.signature")?))
    };
    let first = report()?;
    let second = report()?;
    Ok(Fork { signer, reports: [first, second] })
}

/// The inverse of [`encode_governed`]. A testimony's report carries admissions only (its
/// proofs), and an admission travels only inside a testimony.
pub fn decode_governed(r: &mut Reader<'_>) -> Result<Governed, Error> {
    let kind = r.u8("governance.kind")?;
    if r.nested != (kind == 7) {
        return Err(Error::Tag { field: "governance.kind", value: kind });
    }
    Ok(match kind {
        0 => Governed::Propose(decode_signed(r)?),
        1 => Governed::Vote(decode_signed(r)?),
        2 => {
            let outer = std::mem::replace(&mut r.nested, true);
            let t = decode_signed(r);
            r.nested = outer;
            Governed::Testimony(t?)
        }
        3 => Governed::RequestAudit(decode_signed(r)?),
        4 => Governed::Verdict(decode_signed(r)?),
        5 => Governed::Fork(Box::new(decode_fork(r)?)),
        6 => Governed::Trust(decode_signed(r)?),
        7 => Governed::GaveUp(decode_signed(r)?),
        value => return Err(Error::Tag { field: "governance.kind", value }),
    })
}

/// An [`Input`] with a kind tag.
pub fn encode_input(input: &Input, out: &mut Vec<u8>) {
    match input {
        Input::Report(s) => {
            out.push(0);
            encode_signed(s, out);
        }
        Input::Trust(s) => {
            out.push(1);
            encode_signed(s, out);
        }
        Input::Propose(s) => {
            out.push(2);
            encode_signed(s, out);
        }
        Input::Vote(s) => {
            out.push(3);
            encode_signed(s, out);
        }
        Input::Bond(s) => {
            out.push(4);
            encode_signed(s, out);
        }
        Input::Verdict(s) => {
            out.push(5);
            encode_signed(s, out);
        }
        Input::RequestAudit(s) => {
            out.push(6);
            encode_signed(s, out);
        }
        Input::Testimony(s) => {
            out.push(7);
            encode_signed(s, out);
        }
        Input::Fork(f) => {
            out.push(8);
            encode_fork(f, out);
        }
    }
}

/// The inverse of [`encode_input`].
pub fn decode_input(r: &mut Reader<'_>) -> Result<Input, Error> {
    Ok(match r.u8("input.kind")? {
        0 => Input::Report(decode_signed(r)?),
        1 => Input::Trust(decode_signed(r)?),
        2 => Input::Propose(decode_signed(r)?),
        3 => Input::Vote(decode_signed(r)?),
        4 => Input::Bond(decode_signed(r)?),
        5 => Input::Verdict(decode_signed(r)?),
        6 => Input::RequestAudit(decode_signed(r)?),
        7 => {
            r.nested = true;
            Input::Testimony(decode_signed(r)?)
        }
        8 => Input::Fork(Box::new(decode_fork(r)?)),
        value => return Err(Error::Tag { field: "input.kind", value }),
    })
}
