using System.Globalization;
using System.Text;
using Serilog.Core;
using Serilog.Events;

namespace Xapi.Server.Hosting;

/// <summary>
/// Makes every logged value safe to write as text, whoever supplied it: control characters
/// (line breaks among them) and backslashes are escaped, so a value can never start a line of
/// its own and pass for an entry; long values are cut. An exception is written as
/// <c>ExceptionText</c>, its lines after the first indented, for the same reason: in the log,
/// only a real entry starts at the beginning of a line.
/// </summary>
public sealed class SafeLogValues(int maxLength) : ILogEventEnricher
{
    /// <summary>Property the output templates write in place of <c>{Exception}</c>.</summary>
    public const string ExceptionProperty = "ExceptionText";

    /// <summary>The text sinks' layout: one entry per line, continuation lines indented.</summary>
    public const string ConsoleTemplate = "[{Timestamp:HH:mm:ss} {Level:u3}] {SourceContext}: {Message:lj}{NewLine}{" + ExceptionProperty + ":l}";

    public const string FileTemplate = "{Timestamp:yyyy-MM-dd HH:mm:ss.fff zzz} [{Level:u3}] {SourceContext}: {Message:lj}{NewLine}{" + ExceptionProperty + ":l}";

    public void Enrich(LogEvent logEvent, ILogEventPropertyFactory propertyFactory)
    {
        List<LogEventProperty>? replaced = null;
        foreach (var (name, value) in logEvent.Properties)
        {
            var safe = Sanitize(value);
            if (!ReferenceEquals(safe, value))
            {
                (replaced ??= []).Add(new LogEventProperty(name, safe));
            }
        }
        if (replaced is not null)
        {
            foreach (var property in replaced)
            {
                logEvent.AddOrUpdateProperty(property);
            }
        }
        var exception = logEvent.Exception is { } e ? Indent(e.ToString()) + Environment.NewLine : "";
        logEvent.AddOrUpdateProperty(new LogEventProperty(ExceptionProperty, new ScalarValue(exception)));
    }

    private LogEventPropertyValue Sanitize(LogEventPropertyValue value) => value switch
    {
        ScalarValue { Value: string text } => Escape(text) is var safe && ReferenceEquals(safe, text) ? value : new ScalarValue(safe),
        ScalarValue { Value: char c } => Escape(c.ToString()) is var safe && safe.Length == 1 ? value : new ScalarValue(safe),
        SequenceValue sequence => new SequenceValue(sequence.Elements.Select(Sanitize)),
        StructureValue structure => new StructureValue(
            structure.Properties.Select(p => new LogEventProperty(p.Name, Sanitize(p.Value))), structure.TypeTag is null ? null : Escape(structure.TypeTag)),
        DictionaryValue dictionary => new DictionaryValue(
            dictionary.Elements.Select(kv => new KeyValuePair<ScalarValue, LogEventPropertyValue>((ScalarValue)Sanitize(kv.Key), Sanitize(kv.Value)))),
        _ => value,
    };

    /// <summary>The value as it may be written: escaped, and cut to the limit with the count of what was left out.</summary>
    public string Escape(string text)
    {
        var cut = text.Length > maxLength;
        var shown = cut ? text.AsSpan(0, maxLength) : text.AsSpan();
        if (!cut && !NeedsEscape(shown))
        {
            return text;
        }
        var builder = new StringBuilder(shown.Length + 16);
        foreach (var c in shown)
        {
            switch (c)
            {
                case '\\':
                    builder.Append(@"\\");
                    break;
                case '\n':
                    builder.Append(@"\n");
                    break;
                case '\r':
                    builder.Append(@"\r");
                    break;
                case '\t':
                    builder.Append(@"\t");
                    break;
                default:
                    if (IsUnsafe(c))
                    {
                        builder.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
                    }
                    else
                    {
                        builder.Append(c);
                    }
                    break;
            }
        }
        if (cut)
        {
            builder.Append(CultureInfo.InvariantCulture, $"…(+{text.Length - maxLength} chars)");
        }
        return builder.ToString();
    }

    private static bool NeedsEscape(ReadOnlySpan<char> text)
    {
        foreach (var c in text)
        {
            if (c == '\\' || IsUnsafe(c))
            {
                return true;
            }
        }
        return false;
    }

    // C0 and C1 controls, DEL, and the Unicode line and paragraph separators: each can end or
    // rewrite a line in some viewer.
    private static bool IsUnsafe(char c) => c < ' ' || c is >= '\u007f' and <= '\u009f' || c is '\u2028' or '\u2029';

    private static string Indent(string text)
    {
        var builder = new StringBuilder(text.Length + 64);
        var lines = text.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        for (var i = 0; i < lines.Length; i++)
        {
            if (i > 0)
            {
                builder.Append(Environment.NewLine).Append("    ");
            }
            foreach (var c in lines[i])
            {
                if (IsUnsafe(c) && c != '\t')
                {
                    builder.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
                }
                else
                {
                    builder.Append(c);
                }
            }
        }
        return builder.ToString();
    }
}
