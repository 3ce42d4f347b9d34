// The npm etcd3 client's features, each driven against one endpoint and judged by what etcd 3.4
// answers. Prints one JSON line per feature: {"feature", "ok", "detail"}; `detail` holds only
// what both servers must agree on (keys, values, outcomes), never revisions or lease IDs.
// Usage: node features.mjs http://127.0.0.1:2379
import { Etcd3, EtcdLockFailedError } from 'etcd3';

const endpoint = process.argv[2];
if (!endpoint) {
  console.error('usage: node features.mjs ENDPOINT');
  process.exit(2);
}
const client = new Etcd3({ hosts: endpoint, dialTimeout: 3000 });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with the promise's value, or rejects after `ms` naming what it waited for. */
function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function putAll(pairs) {
  const revisions = {};
  for (const [key, value] of pairs) {
    const res = await client.put(key).value(value).exec();
    revisions[key] = BigInt(res.header.revision);
  }
  return revisions;
}

const features = {
  // Every sort target but VERSION (kine keeps no version counter), both orders, with a limit.
  async 'sorted ranges'() {
    await putAll([['s/b', '1'], ['s/c', '3'], ['s/a', '2']]);
    const keys = (target, order, limit) => {
      let q = client.getAll().prefix('s/').sort(target, order);
      if (limit) q = q.limit(limit);
      return q.keys();
    };
    const detail = {
      keyDescend: await keys('Key', 'Descend'),
      modAscend: await keys('Mod', 'Ascend'),
      modDescendLimit2: await keys('Mod', 'Descend', 2),
      createDescend: await keys('Create', 'Descend'),
      valueAscend: await keys('Value', 'Ascend'),
      valueDescendLimit1: await keys('Value', 'Descend', 1),
    };
    const want = {
      keyDescend: ['s/c', 's/b', 's/a'],
      modAscend: ['s/b', 's/c', 's/a'],
      modDescendLimit2: ['s/a', 's/c'],
      createDescend: ['s/a', 's/c', 's/b'],
      valueAscend: ['s/b', 's/a', 's/c'],
      valueDescendLimit1: ['s/c'],
    };
    return { ok: same(detail, want), detail };
  },

  // The four revision filters, as an election's "older candidates" query uses them.
  async 'filtered ranges'() {
    const rev = await putAll([['f/1', 'a'], ['f/2', 'b'], ['f/3', 'c']]);
    await client.put('f/1').value('a2').exec();
    const keys = (q) => q.keys();
    const detail = {
      minMod: await keys(client.getAll().prefix('f/').minModRevision(String(rev['f/3']))),
      maxMod: await keys(client.getAll().prefix('f/').maxModRevision(String(rev['f/2']))),
      minCreate: await keys(client.getAll().prefix('f/').minCreateRevision(String(rev['f/2']))),
      maxCreateBelowOwn: await keys(
        client.getAll().prefix('f/').maxCreateRevision(String(rev['f/3'] - 1n)).sort('Create', 'Descend'),
      ),
      count: await client.getAll().prefix('f/').count(),
    };
    const want = {
      minMod: ['f/1', 'f/3'],
      maxMod: ['f/2'],
      minCreate: ['f/2', 'f/3'],
      maxCreateBelowOwn: ['f/2', 'f/1'],
      count: 3,
    };
    return { ok: same(detail, want), detail };
  },

  async transactions() {
    await client.put('t/k').value('v1').exec();
    const hit = await client.if('t/k', 'Value', '==', 'v1').then(client.put('t/k').value('v2')).commit();
    const miss = await client
      .if('t/k', 'Value', '==', 'v1')
      .then(client.put('t/k').value('never'))
      .else(client.get('t/k'))
      .commit();
    const detail = {
      firstSucceeded: hit.succeeded,
      secondSucceeded: miss.succeeded,
      value: await client.get('t/k').string(),
    };
    return { ok: same(detail, { firstSucceeded: true, secondSucceeded: false, value: 'v2' }), detail };
  },

  async 'lease revoke deletes attached keys'() {
    const lease = client.lease(10);
    await lease.put('l/revoked/a').value('1').exec();
    await lease.put('l/revoked/b').value('2').exec();
    const before = await client.getAll().prefix('l/revoked/').keys();
    await lease.revoke();
    const after = await client.getAll().prefix('l/revoked/').keys();
    const detail = { before, after };
    return { ok: same(detail, { before: ['l/revoked/a', 'l/revoked/b'], after: [] }), detail };
  },

  async 'lease expiry without keep-alive'() {
    const lease = client.lease(2, { autoKeepAlive: false });
    await lease.put('l/expiring').value('1').exec();
    const right_after = await client.get('l/expiring').string();
    await sleep(5000);
    const later = await client.get('l/expiring').string();
    const detail = { right_after, later };
    return { ok: same(detail, { right_after: '1', later: null }), detail };
  },

  async 'lease kept alive outlives its ttl'() {
    const lease = client.lease(2);
    await lease.put('l/kept').value('1').exec();
    await sleep(5000);
    const later = await client.get('l/kept').string();
    await lease.revoke();
    const revoked = await client.get('l/kept').string();
    const detail = { later, revoked };
    return { ok: same(detail, { later: '1', revoked: null }), detail };
  },

  async 'lease lost when revoked elsewhere'() {
    const lease = client.lease(3);
    const id = await lease.grant();
    const lost = new Promise((resolve) => lease.on('lost', (err) => resolve(err.constructor.name)));
    await client.leaseClient.leaseRevoke({ ID: id });
    const detail = { lost: await within(8000, "'lost' event", lost) };
    lease.release();
    return { ok: detail.lost === 'EtcdLeaseInvalidError', detail };
  },

  async 'time to live and leases'() {
    const lease = client.lease(30, { autoKeepAlive: false });
    const id = await lease.grant();
    await lease.put('l/ttl/a').value('1').exec();
    const ttl = await client.leaseClient.leaseTimeToLive({ ID: id, keys: true });
    const listed = await client.leaseClient.leaseLeases({});
    const detail = {
      granted: Number(ttl.grantedTTL),
      remainingAtMost30: Number(ttl.TTL) <= 30 && Number(ttl.TTL) >= 25,
      keys: ttl.keys.map((k) => k.toString()),
      listed: listed.leases.some((l) => String(l.ID) === String(id)),
    };
    await lease.revoke();
    const gone = await client.leaseClient.leaseTimeToLive({ ID: id });
    detail.afterRevoke = Number(gone.TTL);
    const want = { granted: 30, remainingAtMost30: true, keys: ['l/ttl/a'], listed: true, afterRevoke: -1 };
    return { ok: same(detail, want), detail };
  },

  async locks() {
    const first = client.lock('locks/one');
    await first.acquire();
    let secondFailed = false;
    try {
      await client.lock('locks/one').acquire();
    } catch (e) {
      secondFailed = e instanceof EtcdLockFailedError;
    }
    await first.release();
    const third = client.lock('locks/one');
    await third.acquire();
    await third.release();
    const detail = { secondFailed, thirdAcquired: true };
    return { ok: secondFailed, detail };
  },

  async elections() {
    const election = client.election('elections/one', 5);
    const a = await within(5000, 'first candidate elected', election.campaign('a').wait());
    const b = election.campaign('b');
    let bElected = false;
    b.on('elected', () => {
      bElected = true;
    });
    await sleep(1500);
    const bWhileAHolds = bElected;
    const leaderWhileA = await election.leader();
    await a.resign();
    await within(5000, 'second candidate elected', b.wait());
    const leaderAfter = await election.leader();
    await b.resign();
    const detail = { bWhileAHolds, leaderWhileA, bElectedAfterResign: bElected, leaderAfter };
    const want = { bWhileAHolds: false, leaderWhileA: 'a', bElectedAfterResign: true, leaderAfter: 'b' };
    return { ok: same(detail, want), detail };
  },

  async watches() {
    const watcher = await client.watch().prefix('w/').withPreviousKV().create();
    const events = [];
    const done = new Promise((resolve) => {
      watcher.on('put', (kv, prev) => {
        events.push(['put', kv.key.toString(), kv.value.toString(), prev ? prev.value.toString() : null]);
      });
      watcher.on('delete', (kv, prev) => {
        events.push(['delete', kv.key.toString(), prev ? prev.value.toString() : null]);
        resolve();
      });
    });
    await client.put('w/1').value('x').exec();
    await client.put('w/1').value('y').exec();
    await client.delete().key('w/1').exec();
    await within(5000, 'watch events', done);
    await watcher.cancel();
    const want = [['put', 'w/1', 'x', null], ['put', 'w/1', 'y', 'x'], ['delete', 'w/1', 'y']];
    return { ok: same(events, want), detail: events };
  },
};

const only = process.argv.slice(3);
let failed = 0;
for (const [name, run] of Object.entries(features)) {
  if (only.length && !only.includes(name)) continue;
  let line;
  try {
    line = { feature: name, ...(await within(20000, `end of '${name}'`, run())) };
  } catch (e) {
    line = { feature: name, ok: false, detail: `${e.constructor.name}: ${e.message}` };
  }
  if (!line.ok) failed += 1;
  console.log(JSON.stringify(line));
}
client.close();
process.exit(failed ? 1 : 0);
