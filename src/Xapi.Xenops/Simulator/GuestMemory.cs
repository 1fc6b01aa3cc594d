using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Xapi.Xenops.Simulator;

/// <summary>
/// A simulated guest's RAM. Each 4 KiB page's bytes are a function of (seed, page, version), so a
/// guest of 1 GiB costs four bytes a page here, a migration still moves every byte, and the
/// receiver can check each page it is given. The guest writes pages at a rate inside a working
/// set; in log-dirty mode each written page is recorded, as Xen's shadow log-dirty mode does for
/// pre-copy.
/// </summary>
internal sealed class GuestMemory
{
    public const int PageSize = 4096;

    private readonly uint[] _versions;
    private readonly ulong[] _dirty;
    private ulong _chooser;
    private double _owed;
    private int _dirtyCount;

    public GuestMemory(ulong seed, int pages)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pages, 1);
        Seed = seed;
        _versions = new uint[pages];
        _dirty = new ulong[(pages + 63) / 64];
        // Which pages the guest writes is deterministic per guest too.
        _chooser = seed | 1;
    }

    public ulong Seed { get; }

    public int Pages => _versions.Length;

    public bool LogDirty { get; private set; }

    /// <summary>Pages written since log-dirty mode began or was last harvested.</summary>
    public int DirtyCount => _dirtyCount;

    public static ulong SeedOf(Guid uuid) => BinaryPrimitives.ReadUInt64LittleEndian(uuid.ToByteArray());

    public static int PagesOf(long bytes) => (int)Math.Max(1, bytes / PageSize);

    public uint Version(int page) => _versions[page];

    /// <summary>The guest writes <paramref name="pages"/> pages (fractions carry over) chosen within its first <paramref name="workingSet"/> pages.</summary>
    public void Write(double pages, int workingSet)
    {
        _owed += pages;
        var whole = (long)_owed;
        _owed -= whole;
        var span = Math.Clamp(workingSet, 1, Pages);
        for (long i = 0; i < whole; i++)
        {
            var page = (int)(Next() % (ulong)span);
            _versions[page]++;
            if (LogDirty)
            {
                MarkDirty(page);
            }
        }
    }

    public void StartLogDirty()
    {
        Array.Clear(_dirty);
        _dirtyCount = 0;
        LogDirty = true;
    }

    public void StopLogDirty()
    {
        LogDirty = false;
        Array.Clear(_dirty);
        _dirtyCount = 0;
    }

    /// <summary>The pages written since the last harvest, with their present versions; the record starts again empty.</summary>
    public List<(int Page, uint Version)> TakeDirty()
    {
        var taken = new List<(int, uint)>(_dirtyCount);
        for (var word = 0; word < _dirty.Length; word++)
        {
            var bits = _dirty[word];
            while (bits != 0)
            {
                var page = (word * 64) + System.Numerics.BitOperations.TrailingZeroCount(bits);
                taken.Add((page, _versions[page]));
                bits &= bits - 1;
            }
            _dirty[word] = 0;
        }
        _dirtyCount = 0;
        return taken;
    }

    /// <summary>A page as it arrived from the sending host; the caller has checked its bytes.</summary>
    public void Receive(int page, uint version) => _versions[page] = version;

    /// <summary>SHA-256 over every page's version: equal digests, equal memory.</summary>
    public byte[] Digest() => SHA256.HashData(MemoryMarshal.AsBytes(_versions.AsSpan()));

    /// <summary>The bytes of <paramref name="page"/> at <paramref name="version"/>.</summary>
    public static void Fill(ulong seed, int page, uint version, Span<byte> destination)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(destination[..PageSize]);
        var state = Mix(seed ^ ((ulong)(uint)page << 32 | version));
        for (var i = 0; i < words.Length; i++)
        {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            words[i] = state;
        }
    }

    public static bool Holds(ulong seed, int page, uint version, ReadOnlySpan<byte> content)
    {
        Span<byte> expected = stackalloc byte[PageSize];
        Fill(seed, page, version, expected);
        return content.SequenceEqual(expected);
    }

    private void MarkDirty(int page)
    {
        ref var word = ref _dirty[page >> 6];
        var bit = 1UL << (page & 63);
        if ((word & bit) == 0)
        {
            word |= bit;
            _dirtyCount++;
        }
    }

    private ulong Next()
    {
        _chooser ^= _chooser << 13;
        _chooser ^= _chooser >> 7;
        _chooser ^= _chooser << 17;
        return _chooser;
    }

    // splitmix64's finaliser: neighbouring pages and versions start far apart; never zero for xorshift.
    private static ulong Mix(ulong value)
    {
        value += 0x9E3779B97F4A7C15;
        value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9;
        value = (value ^ (value >> 27)) * 0x94D049BB133111EB;
        value ^= value >> 31;
        return value == 0 ? 1 : value;
    }
}
