// Drives the daemon with the npm xen-api connector (the library Xen Orchestra uses).
// Usage: node smoke.mjs URL PASSWORD [auto|json-rpc|xml-rpc]
import { createClient } from 'xen-api'

const [url, password, transport = 'auto'] = process.argv.slice(2)
const fail = message => {
  console.error(`FAIL: ${message}`)
  process.exit(1)
}
const xapi = createClient({ url, auth: { user: 'root', password }, allowUnauthorized: true, transport })
const timer = setTimeout(() => fail('timed out'), 30_000)

await xapi.connect()
await xapi.objectsFetched
const all = Object.values(xapi.objects.all)
const ofType = type => all.filter(o => o.$type === type)
const pools = ofType('pool')
const hosts = ofType('host')
const vms = ofType('VM')
console.log(`pools=${pools.length} hosts=${hosts.length} vms=${vms.length}`)
if (pools.length !== 1) fail(`expected one pool, saw ${pools.length}`)
if (hosts.length !== 1) fail(`expected one host, saw ${hosts.length}`)
if (pools[0].master !== hosts[0].$ref) fail('pool.master is not the host')
const dom0 = vms.find(vm => vm.is_control_domain)
if (dom0 === undefined) fail('no control domain in the cache')
const template = vms.find(vm => vm.is_a_template)
if (template === undefined) fail('no template in the cache')

const newName = `renamed by xen-api ${Date.now()}`
await xapi.call('VM.set_name_label', template.$ref, newName)
const readBack = await xapi.call('VM.get_name_label', template.$ref)
if (readBack !== newName) fail(`name_label read back as ${readBack}`)

clearTimeout(timer)
await xapi.disconnect()
console.log('OK')
process.exit(0)
