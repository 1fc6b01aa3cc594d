using System.Buffers;
using System.Runtime.InteropServices;

namespace Xapi.Protocol;

/// <summary>
/// A reply being encoded, in pooled segments that grow geometrically. A large reply never
/// lands on the large-object heap nor is copied as it grows, as it was with one doubling
/// array; the segments go back to the pool on <see cref="Dispose"/>.
/// </summary>
public sealed class PooledBufferWriter : IBufferWriter<byte>, IDisposable
{
    private const int FirstSegment = 16 * 1024;

    // Arrays above this size the shared pool may not keep, so segments stop growing here.
    private const int LargestSegment = 1024 * 1024;

    // Most replies fit the first segment; the list is made when one does not.
    private List<(byte[] Array, int Count)>? _full;
    private byte[] _current = ArrayPool<byte>.Shared.Rent(FirstSegment);
    private int _index;
    private long _fullBytes;

    public long WrittenCount => _fullBytes + _index;

    private ReadOnlySpan<(byte[] Array, int Count)> FullSegments => _full is null ? default : CollectionsMarshal.AsSpan(_full);

    public void Advance(int count)
    {
        if ((uint)count > (uint)(_current.Length - _index))
        {
            throw new ArgumentOutOfRangeException(nameof(count));
        }
        _index += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _current.AsMemory(_index);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _current.AsSpan(_index);
    }

    /// <summary>Copies what was written to <paramref name="destination"/>, in order, without flushing it.</summary>
    public void CopyTo(IBufferWriter<byte> destination)
    {
        foreach (var (array, count) in FullSegments)
        {
            destination.Write(array.AsSpan(0, count));
        }
        destination.Write(_current.AsSpan(0, _index));
    }

    public byte[] ToArray()
    {
        var result = new byte[WrittenCount];
        var offset = 0;
        foreach (var (array, count) in FullSegments)
        {
            array.AsSpan(0, count).CopyTo(result.AsSpan(offset));
            offset += count;
        }
        _current.AsSpan(0, _index).CopyTo(result.AsSpan(offset));
        return result;
    }

    public void Dispose()
    {
        foreach (var (array, _) in FullSegments)
        {
            ArrayPool<byte>.Shared.Return(array);
        }
        _full = null;
        if (_current.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_current);
            _current = [];
        }
        _index = 0;
        _fullBytes = 0;
    }

    private void Ensure(int sizeHint)
    {
        ObjectDisposedException.ThrowIf(_current.Length == 0, this);
        var needed = Math.Max(sizeHint, 1);
        if (_current.Length - _index >= needed)
        {
            return;
        }
        (_full ??= []).Add((_current, _index));
        _fullBytes += _index;
        var next = Math.Max(needed, Math.Min(_current.Length * 2, LargestSegment));
        _current = ArrayPool<byte>.Shared.Rent(next);
        _index = 0;
    }
}
