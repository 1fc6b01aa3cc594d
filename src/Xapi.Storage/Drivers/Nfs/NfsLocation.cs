using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Xapi.Storage.Drivers.Nfs;

/// <summary>
/// An NFS SR's device_config, checked: everything that reaches a libnfs call or an <c>nfs://</c>
/// URL is a plain host name or IP address and an absolute, normal path of ordinary characters,
/// so no value can add URL syntax (<c>?</c> options, <c>#</c>, <c>%</c> escapes, <c>@</c>
/// user info) or climb out of <c>serverpath/&lt;sr-uuid&gt;</c>.
/// </summary>
public sealed partial record NfsLocation(string Server, string ServerPath)
{
    public const string ServerKey = "server";
    public const string ServerPathKey = "serverpath";
    public const string NfsVersionKey = "nfsversion";

    /// <summary>SR sm_config key of NFSSR that puts the SR at serverpath itself; refused here.</summary>
    public const string NoSubdirKey = "nosubdir";

    private const int MaxPathLength = 1024;

    /// <summary>
    /// Checks device_config; <paramref name="requireServerPath"/> false lets a probe go on without
    /// serverpath (it then lists the exports), and <see cref="ServerPath"/> is empty.
    /// </summary>
    public static NfsLocation Parse(IReadOnlyDictionary<string, string> deviceConfig, IReadOnlyDictionary<string, string> smConfig, bool requireServerPath = true)
    {
        var server = deviceConfig.GetValueOrDefault(ServerKey);
        if (string.IsNullOrEmpty(server))
        {
            throw new SmException(SmErrors.ConfigServerMissing, "The request is missing the server parameter");
        }
        if (!IsHost(server))
        {
            throw SmException.InvalidArgument($"{ServerKey} must be a host name or an IP address: {Printable(server)}");
        }
        CheckVersion(deviceConfig.GetValueOrDefault(NfsVersionKey));
        if (smConfig.GetValueOrDefault(NoSubdirKey) == "true")
        {
            throw SmException.InvalidArgument($"sm_config {NoSubdirKey}=true is not supported: every NFS SR lives in {ServerPathKey}/<sr-uuid>");
        }
        var path = deviceConfig.GetValueOrDefault(ServerPathKey);
        if (string.IsNullOrEmpty(path))
        {
            if (requireServerPath)
            {
                throw new SmException(SmErrors.ConfigServerPathMissing, "The request is missing the serverpath parameter");
            }
            return new NfsLocation(server, "");
        }
        if (!IsServerPath(path))
        {
            throw new SmException(NfsErrors.ConfigServerPathBad, "The serverpath argument is not valid",
                $"{ServerPathKey} must be an absolute path without '.' or '..' segments, doubled or trailing '/', of letters, digits and ._~+=,@:- only: {Printable(path)}");
        }
        return new NfsLocation(server, path);
    }

    /// <summary>NFSv3 only: refuses 4, 4.0, 4.1 (which NFSSR accepts) and anything else, saying why.</summary>
    public static void CheckVersion(string? version)
    {
        if (string.IsNullOrEmpty(version) || version == "3")
        {
            return;
        }
        if (version.StartsWith('4'))
        {
            throw new SmException(NfsErrors.NfsVersion, "Required NFS server version unsupported",
                $"{NfsVersionKey}={Printable(version)} is not supported: this host reaches NFS without a kernel mount, through libnfs 4.0 (whose NFSv4 writes fail) and qemu's nfs driver (NFSv3 only); use {NfsVersionKey}=3");
        }
        throw new SmException(NfsErrors.NfsVersion, "Required NFS server version unsupported", $"Invalid {NfsVersionKey}: {Printable(version)} (3 is supported)");
    }

    /// <summary>How the server appears in a URL (IPv6 in brackets).</summary>
    public string UrlHost => Server.Contains(':') ? $"[{Server}]" : Server;

    /// <summary>The <c>nfs://</c> URL of a path inside the mounted serverpath.</summary>
    public string UrlOf(string pathInExport) => $"nfs://{UrlHost}{(ServerPath == "/" ? "" : ServerPath)}{pathInExport}";

    public static bool IsHost(string value)
    {
        if (value.Length > 253)
        {
            return false;
        }
        if (Ipv4().IsMatch(value))
        {
            return IPAddress.TryParse(value, out var v4) && v4.ToString() == value;
        }
        if (value.Contains(':'))
        {
            return !value.Contains('%') && IPAddress.TryParse(value, out var v6) && v6.AddressFamily == AddressFamily.InterNetworkV6;
        }
        return HostName().IsMatch(value);
    }

    public static bool IsServerPath(string value) =>
        value == "/" || value.Length <= MaxPathLength && value.StartsWith('/') && value[1..].Split('/').All(s => s is not ("" or "." or "..") && Segment().IsMatch(s));

    private static string Printable(string value) => new(value.Select(c => char.IsControl(c) ? '?' : c).Take(200).ToArray());

    [GeneratedRegex(@"^\d{1,3}(\.\d{1,3}){3}\z")]
    private static partial Regex Ipv4();

    [GeneratedRegex(@"^(?=.*[A-Za-z])[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\z")]
    private static partial Regex HostName();

    [GeneratedRegex(@"^[A-Za-z0-9._~+=,@:-]+\z")]
    private static partial Regex Segment();
}

/// <summary>NFSSR's error codes (XE_SR_ERRORCODES) beside the common ones in <see cref="SmErrors"/>.</summary>
public static class NfsErrors
{
    public const int NfsVersion = 72;
    public const int NfsMount = 73;
    public const int ConfigServerPathBad = 103;
    public const int NfsTarget = 108;
}
