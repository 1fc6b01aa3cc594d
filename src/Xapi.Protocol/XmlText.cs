using System.Buffers;
using System.Globalization;
using System.Text;

namespace Xapi.Protocol;

/// <summary>
/// Which strings XML 1.0 can carry. Its <c>Char</c> production excludes the C0 controls other
/// than tab, LF and CR, U+FFFE, U+FFFF and lone surrogates; a reply holding one is not XML, and
/// strict parsers (expat, so Python's xmlrpc.client and XenAPI.py) reject all of it.
/// </summary>
public static class XmlText
{
    // Surrogates are searched for too, then told apart: a well-formed pair is fine.
    private static readonly SearchValues<char> Suspect = SearchValues.Create(
        "\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\u000B\u000C\u000E\u000F"
        + "\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001A\u001B\u001C\u001D\u001E\u001F\uFFFE\uFFFF"
        + string.Concat(Enumerable.Range(0xD800, 0x800).Select(c => (char)c)));

    /// <summary>The index of the first character XML 1.0 cannot carry, or -1.</summary>
    public static int IndexOfUnrepresentable(ReadOnlySpan<char> text)
    {
        var offset = 0;
        while (true)
        {
            var next = text[offset..].IndexOfAny(Suspect);
            if (next < 0)
            {
                return -1;
            }
            var i = offset + next;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                offset = i + 2;
                continue;
            }
            return i;
        }
    }

    /// <summary>Whether the text holds a surrogate that is not half of a pair (so is not Unicode text).</summary>
    public static bool HasLoneSurrogate(ReadOnlySpan<char> text)
    {
        var i = text.IndexOfAnyInRange('\uD800', '\uDFFF');
        if (i < 0)
        {
            return false;
        }
        for (; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(text[i]))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// The text with every character XML 1.0 cannot carry written as <c>\uXXXX</c>, so that an
    /// error can name the value over either protocol.
    /// </summary>
    public static string Visible(string text)
    {
        var first = IndexOfUnrepresentable(text);
        if (first < 0)
        {
            return text;
        }
        var sb = new StringBuilder(text.Length + 16).Append(text, 0, first);
        for (var i = first; i < text.Length; i++)
        {
            var c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(c).Append(text[++i]);
            }
            else if (IndexOfUnrepresentable([c]) == 0)
            {
                sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
            }
            else
            {
                sb.Append(c);
            }
        }
        return sb.ToString();
    }

    /// <summary>
    /// The first string in a wire value (a string, or one inside lists and maps, keys included)
    /// that XML 1.0 cannot carry; null when there is none. Wire values nest only as deep as the
    /// decoders allow, so the walk is bounded.
    /// </summary>
    public static string? FindUnrepresentable(object? value) => value switch
    {
        string s => IndexOfUnrepresentable(s) >= 0 ? s : null,
        IReadOnlyDictionary<string, object?> map => FindInMap(map),
        IReadOnlyList<object?> list => FindInList(list),
        _ => null,
    };

    private static string? FindInList(IReadOnlyList<object?> list)
    {
        for (var i = 0; i < list.Count; i++)
        {
            if (FindUnrepresentable(list[i]) is { } found)
            {
                return found;
            }
        }
        return null;
    }

    private static string? FindInMap(IReadOnlyDictionary<string, object?> map)
    {
        foreach (var (key, item) in map)
        {
            if (IndexOfUnrepresentable(key) >= 0)
            {
                return key;
            }
            if (FindUnrepresentable(item) is { } found)
            {
                return found;
            }
        }
        return null;
    }
}
