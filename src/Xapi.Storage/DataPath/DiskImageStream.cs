namespace Xapi.Storage.DataPath;

/// <summary>
/// A disk image read or written front to back as a stream, for what writes a stream rather than
/// blocks (a hypervisor saving a suspend image into a VDI). The image stays the caller's to dispose.
/// </summary>
public sealed class DiskImageStream(IDiskImage image) : Stream
{
    private long _position;

    public override bool CanRead => true;

    public override bool CanSeek => true;

    public override bool CanWrite => image.Writable;

    public override long Length => image.Size;

    public override long Position
    {
        get => _position;
        set => _position = value is >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value));
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var count = (int)Math.Min(buffer.Length, Math.Max(0, image.Size - _position));
        if (count == 0)
        {
            return 0;
        }
        await image.ReadAsync(_position, buffer[..count], cancellationToken).ConfigureAwait(false);
        _position += count;
        return count;
    }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_position + buffer.Length > image.Size)
        {
            throw new IOException($"writing {buffer.Length} bytes at {_position} would pass the end of a {image.Size}-byte disk");
        }
        await image.WriteAsync(_position, buffer, cancellationToken).ConfigureAwait(false);
        _position += buffer.Length;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => image.FlushAsync(cancellationToken).AsTask();

    // Only the asynchronous path is offered: a synchronous call would block a thread on the data path.
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("read asynchronously");

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("write asynchronously");

    public override void Flush() => throw new NotSupportedException("flush asynchronously");

    public override long Seek(long offset, SeekOrigin origin) => Position = origin switch
    {
        SeekOrigin.Begin => offset,
        SeekOrigin.Current => _position + offset,
        _ => image.Size + offset,
    };

    public override void SetLength(long value) => throw new NotSupportedException("a disk's size is changed by resizing its VDI");
}
