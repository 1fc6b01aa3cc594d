# Guest side of the lvm scenario (sourced as /guest/test.sh by the guest's /init): /dev/vda is
# the empty disk the SR is made on, /dev/vdb a tar of the .NET runtime and the scenario program.
mkdir -p /run/lock/lvm /run/lvm /opt
start=$(cut -d' ' -f1 /proc/uptime)
tar -xf /dev/vdb -C /opt || { echo "SCENARIO payload FAIL cannot unpack /dev/vdb"; echo "SCENARIO-END"; exit 1; }
echo "GUEST payload unpacked in $(echo "$(cut -d' ' -f1 /proc/uptime) $start" | awk '{printf "%.1f", $1-$2}')s"
export DOTNET_ROOT=/opt/dotnet HOME=/tmp DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1 DOTNET_TieredPGO=0
/opt/dotnet/dotnet /opt/scenario/Xapi.Storage.LvmScenario.dll /dev/vda
