# Guest side of the lvm scenario (sourced as /guest/test.sh by the guest's /init): /dev/vda is
# the empty disk the SR is made on, /dev/vdb a tar of the .NET runtime, the published daemon
# (/opt/xapi) and the scenario program (/opt/scenario), which starts the daemon itself.
mkdir -p /run/lock/lvm /run/lvm /opt /tmp/xapi
start=$(cut -d' ' -f1 /proc/uptime)
tar -xf /dev/vdb -C /opt || { echo "SCENARIO payload FAIL cannot unpack /dev/vdb"; echo "SCENARIO-END"; exit 1; }
echo "GUEST payload unpacked in $(echo "$(cut -d' ' -f1 /proc/uptime) $start" | awk '{printf "%.1f", $1-$2}')s"
# The daemon listens on 127.0.0.1: the loopback interface is down until brought up.
ip link set lo up || { echo "SCENARIO loopback FAIL cannot bring lo up"; echo "SCENARIO-END"; exit 1; }
export DOTNET_ROOT=/opt/dotnet HOME=/tmp DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
# JIT is most of the run under TCG: no tiered PGO instrumentation (it re-JITs hot methods once
# more); quick JIT for loops and the framework's precompiled (ReadyToRun) code are the defaults,
# set here so that no inherited setting turns them off. The daemon's own assemblies are JIT-compiled:
# a ReadyToRun publish needs the crossgen2 package, which this build does not have offline.
export DOTNET_TieredPGO=0 DOTNET_TC_QuickJitForLoops=1 DOTNET_ReadyToRun=1
/opt/dotnet/dotnet /opt/scenario/Xapi.Storage.LvmScenario.dll /dev/vda /opt/xapi/xapi-dotnet.dll /tmp/xapi
