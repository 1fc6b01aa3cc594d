using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Xapi.Server.Http;

/// <summary>
/// Who is at the other end of a local Unix-socket connection, from the kernel's own record
/// (<c>SO_PEERCRED</c>). Real hosts trust every peer of their socket; this daemon trusts only a
/// root peer, so a socket left readable to other users grants them nothing.
/// </summary>
public sealed record LocalPeer(int ProcessId, uint UserId, uint GroupId)
{
    private const int SolSocket = 1;
    private const int SoPeerCred = 17;
    private static readonly object ItemKey = typeof(LocalPeer);

    public bool IsRoot => UserId == 0;

    /// <summary>Connection middleware for the Unix-socket listener: records the peer once per connection.</summary>
    public static ConnectionDelegate Record(ConnectionDelegate next) => connection =>
    {
        if (connection.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket && Read(socket) is { } peer)
        {
            connection.Items[ItemKey] = peer;
        }
        return next(connection);
    };

    /// <summary>The peer of the connection an HTTP request came on; null over TCP.</summary>
    public static LocalPeer? Of(HttpContext context) =>
        context.Features.Get<IConnectionItemsFeature>()?.Items.TryGetValue(ItemKey, out var peer) == true ? peer as LocalPeer : null;

    private static LocalPeer? Read(Socket socket)
    {
        Span<byte> credentials = stackalloc byte[12];
        try
        {
            var length = socket.GetRawSocketOption(SolSocket, SoPeerCred, credentials);
            if (length < 12)
            {
                return null;
            }
        }
        catch (SocketException)
        {
            return null;
        }
        return new LocalPeer(
            BitConverter.ToInt32(credentials[..4]),
            BitConverter.ToUInt32(credentials[4..8]),
            BitConverter.ToUInt32(credentials[8..12]));
    }
}
