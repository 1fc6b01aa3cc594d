using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Xapi.Server.Api;

/// <summary>
/// IP addresses and CIDRs as real hosts accept them (helpers.ml is_valid_ip, parse_cidr): an
/// address in the strict text form <c>inet_pton</c> reads (dotted quads without leading zeros, or
/// IPv6 without a zone or brackets), a CIDR as such an address with a prefix length in range.
/// </summary>
internal static class IpAddresses
{
    public static bool IsValid(AddressFamily family, string text) => TryParse(family, text) is not null;

    /// <summary>The address of a CIDR in its canonical text, or null if <paramref name="cidr"/> is not one of this family.</summary>
    public static string? CidrAddress(AddressFamily family, string cidr)
    {
        var slash = cidr.IndexOf('/', StringComparison.Ordinal);
        if (slash < 0)
        {
            return null;
        }
        var bits = cidr[(slash + 1)..];
        var max = family == AddressFamily.InterNetwork ? 32 : 128;
        if (bits.Length is 0 or > 3 || !bits.All(char.IsAsciiDigit) || int.Parse(bits, CultureInfo.InvariantCulture) > max)
        {
            return null;
        }
        return TryParse(family, cidr[..slash])?.ToString();
    }

    private static IPAddress? TryParse(AddressFamily family, string text)
    {
        if (family == AddressFamily.InterNetwork)
        {
            var parts = text.Split('.');
            if (parts.Length != 4 || parts.Any(p => p.Length is 0 or > 3 || !p.All(char.IsAsciiDigit) || (p.Length > 1 && p[0] == '0') || int.Parse(p, CultureInfo.InvariantCulture) > 255))
            {
                return null;
            }
            return IPAddress.Parse(text);
        }
        // .NET also reads zones ("%eth0") and brackets, which inet_pton refuses.
        if (text.Length == 0 || text.AsSpan().IndexOfAny('%', '[', ']') >= 0 || !text.Contains(':', StringComparison.Ordinal))
        {
            return null;
        }
        return IPAddress.TryParse(text, out var address) && address.AddressFamily == AddressFamily.InterNetworkV6 ? address : null;
    }
}
