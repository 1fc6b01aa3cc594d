using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text.Unicode;

namespace Xapi.Protocol;

/// <summary>
/// Writes into the span an <see cref="IBufferWriter{T}"/> lent it, going back to the writer
/// only when that span is full. A reply is tens of thousands of tiny tag writes; paying an
/// interface call for GetSpan and Advance on each of them was most of the encoding time.
/// </summary>
internal ref struct Utf8Sink
{
    // Asked of the writer on each refill: large enough that refills are rare, small enough for
    // a short reply into a fresh ArrayBufferWriter.
    private const int RefillHint = 512;

    private readonly IBufferWriter<byte> _output;
    private Span<byte> _buffer;
    private int _position;

    public Utf8Sink(IBufferWriter<byte> output)
    {
        _output = output;
        _buffer = output.GetSpan(RefillHint);
        _position = 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length <= _buffer.Length - _position)
        {
            bytes.CopyTo(_buffer[_position..]);
            _position += bytes.Length;
        }
        else
        {
            WriteAcross(bytes);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write(byte value)
    {
        if (_position < _buffer.Length)
        {
            _buffer[_position++] = value;
        }
        else
        {
            WriteAcross([value]);
        }
    }

    /// <summary>At least <paramref name="size"/> bytes to fill; say how many with <see cref="Advance"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Span<byte> GetSpan(int size)
    {
        if (size > _buffer.Length - _position)
        {
            Refill(size);
        }
        return _buffer[_position..];
    }

    public void Advance(int count) => _position += count;

    /// <summary>UTF-8 of <paramref name="text"/>, lone surrogates as U+FFFD as <see cref="System.Text.Encoding.UTF8"/> writes them.</summary>
    public void WriteUtf8(ReadOnlySpan<char> text)
    {
        while (!text.IsEmpty)
        {
            var status = Utf8.FromUtf16(text, _buffer[_position..], out var read, out var written);
            _position += written;
            text = text[read..];
            if (status == OperationStatus.Done)
            {
                return;
            }
            // DestinationTooSmall: room for the rest, or at least for one whole scalar.
            Refill(Math.Max(4, Math.Min(text.Length * 3, 64 * 1024)));
        }
    }

    /// <summary>Hands what was written back to the writer; the sink is unusable afterwards.</summary>
    public void Flush()
    {
        _output.Advance(_position);
        _position = 0;
        _buffer = default;
    }

    private void WriteAcross(scoped ReadOnlySpan<byte> bytes)
    {
        while (true)
        {
            var room = _buffer.Length - _position;
            if (bytes.Length <= room)
            {
                bytes.CopyTo(_buffer[_position..]);
                _position += bytes.Length;
                return;
            }
            bytes[..room].CopyTo(_buffer[_position..]);
            _position += room;
            bytes = bytes[room..];
            Refill(Math.Min(bytes.Length, 64 * 1024));
        }
    }

    private void Refill(int size)
    {
        _output.Advance(_position);
        _position = 0;
        _buffer = _output.GetSpan(Math.Max(size, RefillHint));
    }
}
