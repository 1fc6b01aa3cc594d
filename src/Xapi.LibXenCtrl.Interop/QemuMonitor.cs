using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xapi.Xenops;

namespace Xapi.LibXenCtrl.Interop;

/// <summary>A QMP command the device model refused, or a monitor that could not be reached.</summary>
public sealed class QemuMonitorException(string message, Exception? inner = null) : XenopsException(message, inner);

/// <summary>
/// A connection to the QMP monitor of an HVM guest's device model (the socket libxl gives qemu
/// at <c>/var/run/xen/qmp-libxl-DOMID</c>), used for what xenopsd also drives over QMP itself:
/// changing the disc of an emulated CD drive. qemu opens the disc by its path, so no descriptor is
/// passed: libxl_cdrom_insert passes one (QMP add-fd) and Debian's qemu-system-xen 7.2 drops the
/// connection at that command under Xen 4.17 (seen under QEMU with xl cd-insert too: ERROR_PROTOCOL_ERROR_QMP).
/// One command at a time, each answered before the next; qemu serves one client at a time.
/// </summary>
public sealed class QemuMonitor : IDisposable
{
    private static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(30);

    private readonly Socket _socket;
    private readonly StreamReader _reader;
    private readonly Stream _stream;

    private QemuMonitor(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new StreamReader(_stream, new UTF8Encoding(false));
    }

    /// <summary>The monitor socket libxl creates for a domain's device model.</summary>
    public static string SocketPath(uint domid) => $"/var/run/xen/qmp-libxl-{domid}";

    /// <summary>Connects, reads qemu's greeting and leaves capabilities negotiation mode, so commands can run.</summary>
    public static QemuMonitor Connect(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
        {
            ReceiveTimeout = (int)ReplyTimeout.TotalMilliseconds,
            SendTimeout = (int)ReplyTimeout.TotalMilliseconds,
        };
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new QemuMonitorException($"the device model's monitor {path} cannot be reached: {e.Message}", e);
        }
        var monitor = new QemuMonitor(socket);
        try
        {
            var greeting = monitor.ReadMessage();
            if (!greeting.TryGetProperty("QMP", out _))
            {
                throw new QemuMonitorException($"{path} did not greet as a QMP monitor: {greeting.GetRawText()}");
            }
            monitor.Execute("qmp_capabilities");
            return monitor;
        }
        catch (IOException e)
        {
            monitor.Dispose();
            throw new QemuMonitorException($"the device model's monitor {path} closed before greeting: {e.Message}", e);
        }
        catch
        {
            monitor.Dispose();
            throw;
        }
    }

    /// <summary>Runs a command and returns its <c>return</c> value; events that arrive meanwhile are skipped.</summary>
    /// <exception cref="QemuMonitorException">qemu answered an error, or the connection ended</exception>
    public JsonElement Execute(string command, JsonObject? arguments = null)
    {
        var request = new JsonObject { ["execute"] = command };
        if (arguments is not null)
        {
            request["arguments"] = arguments;
        }
        try
        {
            _stream.Write(Encoding.UTF8.GetBytes(request.ToJsonString() + "\n"));
            while (true)
            {
                var reply = ReadMessage();
                if (reply.TryGetProperty("return", out var value))
                {
                    return value.Clone();
                }
                if (reply.TryGetProperty("error", out var error))
                {
                    throw new QemuMonitorException($"QMP {command} failed: {Text(error, "class")}: {Text(error, "desc")}");
                }
            }
        }
        catch (IOException e)
        {
            throw new QemuMonitorException($"QMP {command}: the device model closed its monitor ({e.Message})", e);
        }
    }

    private JsonElement ReadMessage()
    {
        var line = _reader.ReadLine() ?? throw new IOException("end of stream");
        try
        {
            using var document = JsonDocument.Parse(line);
            return document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new QemuMonitorException($"the device model's monitor sent what is not JSON: {line}", e);
        }
    }

    private static string Text(JsonElement error, string property) =>
        error.TryGetProperty(property, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString()! : "";

    public void Dispose()
    {
        _reader.Dispose();
        _stream.Dispose();
        _socket.Dispose();
    }
}
