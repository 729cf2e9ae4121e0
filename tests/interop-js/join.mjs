// A js-libp2p peer joins a vAIn network: it dials a vAIn node, finds another node's signed
// announcement in the DHT (checking it with a `vain` record validator), and sees a forged
// announcement refused. Usage: node join.mjs <bootstrap multiaddr> <node id hex>
// Prints one JSON object per step on stdout.
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { ed25519 } from '@noble/curves/ed25519.js'
import { blake3 } from '@noble/hashes/blake3.js'

// js-libp2p 3 calls Promise.withResolvers (Node.js ≥ 22); this machine's Node.js 20 lacks it.
Promise.withResolvers ??= function () {
  let resolve, reject
  const promise = new Promise((res, rej) => { resolve = res; reject = rej })
  return { promise, resolve, reject }
}

const [bootstrap, nodeIdHex] = process.argv.slice(2)
const say = (o) => console.log(JSON.stringify(o))
const hex = (b) => Buffer.from(b).toString('hex')

// FlatBuffers, read by hand: a table's field `i` (vtable slot i) as an absolute offset, or null.
const u16 = (b, o) => b[o] | (b[o + 1] << 8)
const u32 = (b, o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0
function field (b, table, i) {
  const vt = table - (u32(b, table) | 0)
  const slot = 4 + 2 * i
  if (slot >= u16(b, vt)) return null
  const off = u16(b, vt + slot)
  return off === 0 ? null : table + off
}
const root = (b) => u32(b, 0)
function vector (b, at) {
  const start = at + u32(b, at)
  return b.subarray(start + 4, start + 4 + u32(b, start))
}
function u64 (b, o) { return BigInt(u32(b, o)) + (BigInt(u32(b, o + 4)) << 32n) }

// SignedAnnouncement { body: [ubyte] (an Announcement), signature: Signature (64 bytes) }.
// Announcement fields: 0 format_version, 1 node_id, 2 signing_key, 3 rotation_chain,
// 4 addresses, 5 roles, 6 resources, 7 x25519_key, 8 timestamp_ms, 9 ingest, 10 region.
const TAG = new TextEncoder().encode('vain/announcement/v1')
function open (value) {
  const t = root(value)
  const bodyAt = field(value, t, 0)
  const sigAt = field(value, t, 1)
  if (bodyAt === null || sigAt === null) throw new Error('not a SignedAnnouncement')
  const body = vector(value, bodyAt)
  const signature = value.subarray(sigAt, sigAt + 64)
  const a = root(body)
  const at = (i) => field(body, a, i)
  if (at(1) === null || at(2) === null) throw new Error('announcement without keys')
  const nodeId = body.subarray(at(1), at(1) + 32)
  const signingKey = body.subarray(at(2), at(2) + 32)
  const input = new Uint8Array(TAG.length + 1 + 32)
  input.set(TAG, 0)
  input.set(blake3(body), TAG.length + 1)
  if (!ed25519.verify(signature, input, signingKey)) throw new Error('bad signature')
  // A rotated node signs with a certified key; checking its certificate chain
  // (docs/protocol.md §6) is left out here: such records are refused.
  if (hex(nodeId) !== hex(signingKey)) throw new Error('rotated key: verify the rotation chain')
  const timestamp = at(8) === null ? 0n : u64(body, at(8))
  return { nodeId, signingKey, timestamp }
}

// The `vain` namespace: /vain/node/<32-byte node id> holds that node's SignedAnnouncement.
const PREFIX = new TextEncoder().encode('/vain/node/')
async function validate (key, value) {
  const prefixOk = key.length === PREFIX.length + 32 && PREFIX.every((x, i) => key[i] === x)
  if (!prefixOk) throw new Error('not a vain node record')
  const a = open(value)
  if (hex(a.nodeId) !== hex(key.subarray(PREFIX.length))) throw new Error('record under another node id')
}
function select (key, records) {
  let best = 0
  let bestTs = -1n
  records.forEach((r, i) => {
    try {
      const ts = open(r).timestamp
      if (ts > bestTs) { best = i; bestTs = ts }
    } catch {}
  })
  return best
}

const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: '/vain/kad/1.0.0',
      clientMode: true,
      // vAIn nodes on a LAN or loopback announce private addresses.
      peerInfoMapper: passthroughMapper,
      validators: { vain: validate },
      selectors: { vain: select }
    })
  }
})
await node.dial(multiaddr(bootstrap))
say({ step: 'dialled', peer: node.peerId.toString() })

const key = new Uint8Array(PREFIX.length + 32)
key.set(PREFIX, 0)
key.set(Buffer.from(nodeIdHex, 'hex'), PREFIX.length)
async function lookup () {
  for (let attempt = 0; attempt < 40; attempt++) {
    try {
      for await (const ev of node.services.dht.get(key, { signal: AbortSignal.timeout(5000) })) {
        if (ev.name === 'VALUE') return ev.value
      }
    } catch (err) {
      if (attempt === 39) throw err
    }
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  throw new Error('no record')
}
const genuine = await lookup()
const a = open(genuine)
say({ step: 'found', node_id: hex(a.nodeId), signing_key: hex(a.signingKey), bytes: genuine.length })

// kad-dht keeps a contact only once it answered a ping on /ipfs/ping/1.0.0: vAIn nodes offer
// the standard ping, so the ones it met fill its routing table.
const filled = Date.now() + 10000
while (node.services.dht.routingTable.size < 2 && Date.now() < filled) {
  await new Promise((resolve) => setTimeout(resolve, 200))
}
say({ step: 'routing', size: node.services.dht.routingTable.size })

// A forgery: the genuine record with one byte of its body changed.
const forged = Uint8Array.from(genuine)
forged[forged.length - 80] ^= 0x01
let refused = false
try { await validate(key, forged) } catch { refused = true }
say({ step: 'forged', refused_by_validator: refused })
// Offered to the network anyway (kad-dht does not check what it puts): vAIn nodes refuse it,
// and a lookup still finds the genuine record.
let puts = 0
try {
  for await (const ev of node.services.dht.put(key, forged, { signal: AbortSignal.timeout(10000) })) {
    if (ev.name === 'PEER_RESPONSE') puts++
  }
} catch {}
const again = await lookup()
say({ step: 'after-forgery', put_responses: puts, still_genuine: hex(again) === hex(genuine) })
await node.stop()
