// A three-host pool driven by the npm xen-api connector (Xen Orchestra's): two fresh hosts join
// the first, VMs start on each member and spread over the pool, a VM on a shared SR migrates live
// between members, a member is ejected and joins again, and a new master is designated; the
// master's object cache follows each step.
// Usage: node pool.mjs PASSWORD MASTER_URL MEMBER_URL MEMBER_URL
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createClient } from 'xen-api'

const [password, masterUrl, ...memberUrls] = process.argv.slice(2)
const fail = message => {
  console.error(`FAIL: ${message}`)
  process.exit(1)
}
const timer = setTimeout(() => fail('timed out'), 90_000)
const address = url => new URL(url).hostname
const connect = async url => {
  const xapi = createClient({ url, auth: { user: 'root', password }, allowUnauthorized: true, transport: 'xml-rpc' })
  await xapi.connect()
  await xapi.objectsFetched
  return xapi
}
const ofType = (xapi, type) => Object.values(xapi.objects.all).filter(o => o.$type === type)
// Waits on the connector's cache events (not a clock) until `predicate` holds.
const until = (xapi, what, predicate, ms = 20_000) =>
  new Promise((resolve, reject) => {
    const check = () => {
      if (predicate()) {
        xapi.objects.removeListener('add', check)
        xapi.objects.removeListener('update', check)
        xapi.objects.removeListener('remove', check)
        clearTimeout(deadline)
        resolve()
      }
    }
    const deadline = setTimeout(() => reject(new Error(`${what} not seen within ${ms} ms`)), ms)
    xapi.objects.on('add', check)
    xapi.objects.on('update', check)
    xapi.objects.on('remove', check)
    check()
  })

for (const url of memberUrls) {
  const joiner = await connect(url)
  await joiner.call('pool.join', address(masterUrl), 'root', password)
  await joiner.disconnect().catch(() => {})
}
const master = await connect(masterUrl)
await until(master, 'three hosts', () => ofType(master, 'host').length === 3)
const hostAt = url => ofType(master, 'host').find(h => h.address === address(url)).$ref
console.log(`join: ${ofType(master, 'host').length} hosts in the master's cache`)

const template = ofType(master, 'VM').find(vm => vm.is_a_template && vm.name_label === 'Other install media')
const vms = []
for (let i = 0; i < 5; i++) {
  const vm = await master.call('VM.clone', template.$ref, `npm pool vm ${i}`)
  await master.call('VM.set_is_a_template', vm, false)
  vms.push(vm)
}
for (const [i, url] of memberUrls.entries()) {
  await master.call('VM.start_on', vms[i], hostAt(url), false, false)
  if ((await master.call('VM.get_resident_on', vms[i])) !== hostAt(url)) fail(`VM ${i} is not on ${url}`)
}
for (const vm of vms.slice(2)) await master.call('VM.start', vm, false, false)
const residents = await Promise.all(vms.map(vm => master.call('VM.get_resident_on', vm)))
const counts = ofType(master, 'host').map(h => residents.filter(r => r === h.$ref).length).sort()
console.log(`5 VMs over 3 hosts: ${counts}`)
if (counts[2] - counts[0] > 1) fail(`not spread by free memory: ${counts}`)
const byRef = (xapi, ref) => Object.values(xapi.objects.all).find(o => o.$ref === ref)
await until(master, 'running VMs in the cache', () => vms.every(ref => byRef(master, ref)?.power_state === 'Running'))
for (const vm of vms) await master.call('VM.hard_shutdown', vm)

// A directory every host of this machine reaches stands in for NFS.
const sr = await master.call('SR.create', hostAt(masterUrl), { location: mkdtempSync(join(tmpdir(), 'xapi-npm-shared-')) }, '0',
  'pool storage', '', 'ext', 'user', true, {})
const mover = vms[0]
const vdi = await master.call('VDI.create', {
  name_label: 'moving disk', name_description: '', SR: sr, virtual_size: String(4 << 20), type: 'user',
  sharable: false, read_only: false, other_config: {}, xenstore_data: {}, sm_config: {}, tags: [],
})
await master.call('VBD.create', {
  VM: mover, VDI: vdi, userdevice: '0', bootable: true, mode: 'RW', type: 'Disk', unpluggable: true,
  empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {},
})
await master.call('VM.start_on', mover, hostAt(memberUrls[0]), false, false)
// An HVM guest moves live only with its PV drivers up (VM_LACKS_FEATURE before), as on real hosts.
await until(master, 'the guest agent', () => byRef(master, mover)?.guest_metrics !== 'OpaqueRef:NULL', 30_000)
await master.call('VM.pool_migrate', mover, hostAt(memberUrls[1]), { live: 'true' })
await until(master, 'the VM on its new host', () => byRef(master, mover)?.resident_on === hostAt(memberUrls[1]) && byRef(master, mover)?.power_state === 'Running')
console.log(`pool_migrate: the VM runs on the host at ${address(memberUrls[1])}`)
await master.call('VM.hard_shutdown', mover)

const ejected = hostAt(memberUrls[1])
await master.call('pool.eject', ejected)
await until(master, 'the ejected host gone', () => ofType(master, 'host').length === 2)
console.log('eject: 2 hosts in the master\'s cache')
const alone = await connect(memberUrls[1])
if (ofType(alone, 'host').length !== 1) fail('the ejected host is not a pool of its own')
await alone.call('pool.join', address(masterUrl), 'root', password)
await alone.disconnect().catch(() => {})
await until(master, 'the host back', () => ofType(master, 'host').length === 3)
console.log('rejoin: 3 hosts in the master\'s cache')

const heir = hostAt(memberUrls[0])
await master.call('pool.designate_new_master', heir)
await master.disconnect().catch(() => {})
const newMaster = await connect(memberUrls[0])
const pool = ofType(newMaster, 'pool')[0]
if (pool.master !== heir) fail(`the pool's master is ${pool.master}, not ${heir}`)
console.log(`designate: the pool's master is the host at ${address(memberUrls[0])}`)
// Pointed at the old master, the connector follows HOST_IS_SLAVE to the new one.
const followed = await connect(masterUrl)
if (ofType(followed, 'pool')[0].master !== heir) fail('the connector did not reach the new master')
await followed.disconnect().catch(() => {})
await newMaster.disconnect().catch(() => {})

clearTimeout(timer)
console.log('OK')
process.exit(0)
