using System.Security.Cryptography.X509Certificates;

namespace Xapi.Storage.Nbd;

/// <summary>Limits and TLS policy of an <see cref="NbdServer"/>.</summary>
public sealed class NbdServerOptions
{
    /// <summary>The port the real xapi-nbd listens on.</summary>
    public const int StandardPort = 10809;

    /// <summary>The certificate offered after NBD_OPT_STARTTLS; without one STARTTLS is unsupported.</summary>
    public X509Certificate2? Certificate { get; init; }

    /// <summary>
    /// Every option other than STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD (EXPORT_NAME closes)
    /// until TLS is up: the real server's FORCEDTLS mode, for networks of purpose <c>nbd</c>.
    /// </summary>
    public bool RequireTls { get; init; }

    /// <summary>Connections served at once (xapi-nbd allows 16); further ones are closed at once.</summary>
    public int MaxConnections { get; init; } = 16;

    /// <summary>From accept to the end of option haggling, TLS included; then the connection is closed.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A connection with no request for this long during transmission is closed.</summary>
    public TimeSpan IdleTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>The largest READ (advertised as the maximum block size); longer ones get EINVAL.</summary>
    public int MaxRequestLength { get; init; } = 32 << 20;

    /// <summary>The largest option payload (export names, meta context queries); longer ones get NBD_REP_ERR_TOO_BIG and a close.</summary>
    public int MaxOptionLength { get; init; } = 4096;

    /// <summary>Options a client may send before it chooses an export; one more closes the connection.</summary>
    public int MaxOptions { get; init; } = 64;

    /// <summary>
    /// Bytes of READ replies one connection may have in preparation at once (pipelined
    /// requests beyond it wait): with <see cref="MaxConnections"/> this bounds the server's buffers.
    /// </summary>
    public int MaxInFlightBytesPerConnection { get; init; } = 64 << 20;

    /// <summary>Most extents in one BLOCK_STATUS reply; the client asks again for the rest.</summary>
    public int MaxExtentsPerReply { get; init; } = 16 * 1024;
}
