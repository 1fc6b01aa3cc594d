using System.Text;

namespace Xapi.Model;

/// <summary>How datamodel names become C# names (the code generator uses the same rule).</summary>
public static class Naming
{
    public static string Pascal(string name)
    {
        var sb = new StringBuilder();
        foreach (var part in name.Split(['_', '-', '.', ' ', '/'], StringSplitOptions.RemoveEmptyEntries))
        {
            sb.Append(char.ToUpperInvariant(part[0])).Append(part.AsSpan(1));
        }
        var result = sb.Length == 0 ? "_" : sb.ToString();
        return char.IsDigit(result[0]) ? "_" + result : result;
    }
}
