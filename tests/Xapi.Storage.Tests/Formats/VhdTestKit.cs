using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using Xapi.Storage.DataPath;
using Xapi.Storage.Formats.Vhd;

namespace Xapi.Storage.Tests.Formats;

/// <summary>Temporary sparse disks, streams that behave like HTTP bodies, and VHD surgery for the VHD tests.</summary>
internal sealed class VhdTestKit : IDisposable
{
    public const int MiB = 1024 * 1024;

    public VhdTestKit()
    {
        Directory = Path.Combine(Path.GetTempPath(), "xapi-vhd-" + Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(Directory);
    }

    public string Directory { get; }

    public string PathOf(string name) => Path.Combine(Directory, name);

    /// <summary>A sparse file of <paramref name="size"/> bytes, all holes.</summary>
    public string Sparse(string name, long size)
    {
        var path = PathOf(name);
        using var file = new FileStream(path, FileMode.Create, FileAccess.Write);
        file.SetLength(size);
        return path;
    }

    public static void WriteAt(string path, long offset, byte[] data)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Write);
        file.Position = offset;
        file.Write(data);
    }

    public static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public static string Sha256(string path)
    {
        using var file = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(file));
    }

    public static RawFileImage Open(string path, bool writable = false) => RawFileImage.Open(path, writable);

    /// <summary>Exports <paramref name="source"/> as our writer does for a full sparse export, to a file, through a stream that cannot seek.</summary>
    public async Task<(string Path, VhdExport Plan)> ExportAsync(string source, string name, VhdExportOptions? options = null, IReadOnlyList<DiskExtent>? extents = null)
    {
        await using var image = Open(source);
        var plan = await VhdExport.PlanAsync(image, extents is null ? image.MapAsync(0, image.Size, CancellationToken.None) : ToAsync(extents), options, CancellationToken.None);
        var path = PathOf(name);
        await using (var file = new FileStream(path, FileMode.Create, FileAccess.Write))
        {
            await plan.WriteToAsync(new ForwardOnlyStream(file), null, CancellationToken.None);
        }
        Assert.That(new FileInfo(path).Length, Is.EqualTo(plan.Length), "the planned length is the written length");
        return (path, plan);
    }

    public static async IAsyncEnumerable<DiskExtent> ToAsync(IEnumerable<DiskExtent> extents)
    {
        await Task.CompletedTask;
        foreach (var extent in extents)
        {
            yield return extent;
        }
    }

    /// <summary>Imports <paramref name="vhd"/> bytes into the disk file at <paramref name="target"/>, as an HTTP body read in uneven pieces.</summary>
    public static async Task<VhdImportResult> ImportAsync(byte[] vhd, string target, bool sendLength = true, VhdImportOptions? options = null, long? claimedLength = null)
    {
        await using var image = Open(target, writable: true);
        using var body = new ForwardOnlyStream(new MemoryStream(vhd, writable: false), maxRead: 65536 + 17);
        return await VhdImport.ImportAsync(body, claimedLength ?? (sendLength ? vhd.Length : null), image, options, null, CancellationToken.None);
    }

    public static async Task<VhdImportResult> ImportFileAsync(string vhd, string target, bool sendLength = true, VhdImportOptions? options = null)
    {
        await using var image = Open(target, writable: true);
        await using var file = File.OpenRead(vhd);
        using var body = new ForwardOnlyStream(file);
        return await VhdImport.ImportAsync(body, sendLength ? file.Length : null, image, options, null, CancellationToken.None);
    }

    public static (int Code, string Output) Run(string file, params string[] arguments)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {file}");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return (process.ExitCode, output.Result + error.Result);
    }

    public static void Qemu(params string[] arguments)
    {
        var (code, output) = Run("qemu-img", arguments);
        Assert.That(code, Is.Zero, $"qemu-img {string.Join(' ', arguments)}: {output}");
    }

    public static long QemuVirtualSize(string path)
    {
        var (code, output) = Run("qemu-img", "info", "--output=json", path);
        Assert.That(code, Is.Zero, output);
        using var json = System.Text.Json.JsonDocument.Parse(output);
        return json.RootElement.GetProperty("virtual-size").GetInt64();
    }

    // VHD surgery: change a field and re-seal the checksum, as a buggy or hostile writer would.

    public static void SealFooter(byte[] vhd, int at)
    {
        var footer = vhd.AsSpan(at, 512);
        BinaryPrimitives.WriteUInt32BigEndian(footer[64..], 0);
        BinaryPrimitives.WriteUInt32BigEndian(footer[64..], VhdFormat.Checksum(footer, 64));
    }

    public static void SealHeader(byte[] vhd, int at = 512)
    {
        var header = vhd.AsSpan(at, 1024);
        BinaryPrimitives.WriteUInt32BigEndian(header[36..], 0);
        BinaryPrimitives.WriteUInt32BigEndian(header[36..], VhdFormat.Checksum(header, 36));
    }

    public static long TableOffset(byte[] vhd) => (long)BinaryPrimitives.ReadUInt64BigEndian(vhd.AsSpan(512 + 16));

    public static uint BatEntry(byte[] vhd, int block) => BinaryPrimitives.ReadUInt32BigEndian(vhd.AsSpan((int)TableOffset(vhd) + (block * 4)));

    public static void SetBatEntry(byte[] vhd, int block, uint sector) => BinaryPrimitives.WriteUInt32BigEndian(vhd.AsSpan((int)TableOffset(vhd) + (block * 4)), sector);

    public void Dispose()
    {
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp directory is not worth failing a test for.
        }
    }
}

/// <summary>
/// A stream that refuses to seek or tell its length, as an HTTP body does; reads return at most
/// <c>maxRead</c> bytes, so parsers cannot count on whole buffers.
/// </summary>
internal sealed class ForwardOnlyStream(Stream inner, int maxRead = int.MaxValue) : Stream
{
    public long Transferred { get; private set; }

    public override bool CanRead => inner.CanRead;
    public override bool CanSeek => false;
    public override bool CanWrite => inner.CanWrite;
    public override long Length => throw new NotSupportedException("an HTTP body has no length");
    public override long Position
    {
        get => throw new NotSupportedException("an HTTP body has no position");
        set => throw new NotSupportedException("an HTTP body cannot seek");
    }

    public override void Flush() => inner.Flush();

    public override int Read(byte[] buffer, int offset, int count)
    {
        var read = inner.Read(buffer, offset, Math.Min(count, maxRead));
        Transferred += read;
        return read;
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var read = await inner.ReadAsync(buffer[..Math.Min(buffer.Length, maxRead)], cancellationToken);
        Transferred += read;
        return read;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count)
    {
        inner.Write(buffer, offset, count);
        Transferred += count;
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await inner.WriteAsync(buffer, cancellationToken);
        Transferred += buffer.Length;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException("an HTTP body cannot seek");

    public override void SetLength(long value) => throw new NotSupportedException("an HTTP body cannot seek");
}
