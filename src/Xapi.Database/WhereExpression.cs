using System.Text;
using Xapi.Model;

namespace Xapi.Database;

/// <summary>
/// The filter language of <c>get_all_records_where</c>:
/// <c>field "name__label"="foo" and not (field "is_a_template"="true")</c>.
/// Operands are <c>field "NAME"</c> or a quoted literal; values compare as their text forms.
/// </summary>
/// <remarks>
/// Untrusted text: parentheses and <c>not</c> may nest at most <see cref="MaxDepth"/> deep (the
/// parser and the evaluator recurse once per level, and a request body holds ~300,000 of
/// them), and runs of <c>and</c>/<c>or</c> become one flat node rather than a chain as deep as
/// the run is long. Deeper text is refused as <c>INVALID_VALUE</c>, like any malformed expression.
/// </remarks>
public abstract record WhereExpression
{
    /// <summary>How deep parentheses and <c>not</c> may nest.</summary>
    public const int MaxDepth = 256;

    public static WhereExpression Parse(string text) => new Parser(text).ParseAll();

    public abstract bool Matches(DbSnapshot snapshot, Row row);

    public sealed record Constant(bool Value) : WhereExpression
    {
        public override bool Matches(DbSnapshot snapshot, Row row) => Value;
    }

    public sealed record Not(WhereExpression Inner) : WhereExpression
    {
        public override bool Matches(DbSnapshot snapshot, Row row) => !Inner.Matches(snapshot, row);
    }

    /// <summary>All terms hold; evaluated left to right, stopping at the first that does not.</summary>
    public sealed record And(IReadOnlyList<WhereExpression> Terms) : WhereExpression
    {
        public override bool Matches(DbSnapshot snapshot, Row row)
        {
            foreach (var term in Terms)
            {
                if (!term.Matches(snapshot, row))
                {
                    return false;
                }
            }
            return true;
        }
    }

    /// <summary>Some term holds; evaluated left to right, stopping at the first that does.</summary>
    public sealed record Or(IReadOnlyList<WhereExpression> Terms) : WhereExpression
    {
        public override bool Matches(DbSnapshot snapshot, Row row)
        {
            foreach (var term in Terms)
            {
                if (term.Matches(snapshot, row))
                {
                    return true;
                }
            }
            return false;
        }
    }

    public sealed record Equal(Operand Left, Operand Right) : WhereExpression
    {
        public override bool Matches(DbSnapshot snapshot, Row row) =>
            string.Equals(Left.Evaluate(snapshot, row), Right.Evaluate(snapshot, row), StringComparison.Ordinal);
    }

    public abstract record Operand
    {
        public abstract string Evaluate(DbSnapshot snapshot, Row row);
    }

    public sealed record Literal(string Value) : Operand
    {
        public override string Evaluate(DbSnapshot snapshot, Row row) => Value;
    }

    public sealed record Field(string Name) : Operand
    {
        public override string Evaluate(DbSnapshot snapshot, Row row)
        {
            var field = Resolve(row.Class, Name);
            if (Name == "_ref")
            {
                return row.Ref;
            }
            return field is null
                ? throw XenApiErrors.InvalidValue("field", Name)
                : XType.ToDisplayString(snapshot.GetField(row, field));
        }

        // Database column names join namespaces with "__" (name__label); records use "_".
        private static FieldMeta? Resolve(ClassMeta cls, string name) =>
            cls.FieldsByName.GetValueOrDefault(name) ?? cls.FieldsByName.GetValueOrDefault(name.Replace("__", "_", StringComparison.Ordinal));
    }

    private sealed class Parser(string text)
    {
        private int _position;
        private int _depth;

        public WhereExpression ParseAll()
        {
            var expression = ParseOr();
            SkipSpace();
            if (_position != text.Length)
            {
                throw Error("unexpected text");
            }
            return expression;
        }

        private WhereExpression ParseOr()
        {
            var first = ParseAnd();
            if (!TryKeyword("or"))
            {
                return first;
            }
            List<WhereExpression> terms = [first, ParseAnd()];
            while (TryKeyword("or"))
            {
                terms.Add(ParseAnd());
            }
            return new Or(terms);
        }

        private WhereExpression ParseAnd()
        {
            var first = ParseUnary();
            if (!TryKeyword("and"))
            {
                return first;
            }
            List<WhereExpression> terms = [first, ParseUnary()];
            while (TryKeyword("and"))
            {
                terms.Add(ParseUnary());
            }
            return new And(terms);
        }

        private WhereExpression ParseUnary()
        {
            if (TryKeyword("not"))
            {
                Enter();
                var inner = ParseUnary();
                _depth--;
                return new Not(inner);
            }
            SkipSpace();
            if (TryChar('('))
            {
                Enter();
                var inner = ParseOr();
                if (!TryChar(')'))
                {
                    throw Error("expected ')'");
                }
                _depth--;
                return inner;
            }
            if (TryKeyword("true"))
            {
                return new Constant(true);
            }
            if (TryKeyword("false"))
            {
                return new Constant(false);
            }
            var left = ParseOperand();
            if (!TryChar('='))
            {
                throw Error("expected '='");
            }
            return new Equal(left, ParseOperand());
        }

        private Operand ParseOperand()
        {
            if (TryKeyword("field"))
            {
                return new Field(ParseString());
            }
            return new Literal(ParseString());
        }

        private string ParseString()
        {
            SkipSpace();
            if (!TryChar('"'))
            {
                throw Error("expected a quoted string");
            }
            var sb = new StringBuilder();
            while (_position < text.Length && text[_position] != '"')
            {
                if (text[_position] == '\\' && _position + 1 < text.Length)
                {
                    _position++;
                }
                sb.Append(text[_position++]);
            }
            if (!TryChar('"'))
            {
                throw Error("unterminated string");
            }
            return sb.ToString();
        }

        private void Enter()
        {
            if (++_depth > MaxDepth)
            {
                throw Error($"parentheses and 'not' nested deeper than {MaxDepth}");
            }
        }

        private bool TryKeyword(string keyword)
        {
            SkipSpace();
            if (string.CompareOrdinal(text, _position, keyword, 0, keyword.Length) == 0
                && (_position + keyword.Length == text.Length || !char.IsLetterOrDigit(text[_position + keyword.Length])))
            {
                _position += keyword.Length;
                return true;
            }
            return false;
        }

        private bool TryChar(char c)
        {
            SkipSpace();
            if (_position < text.Length && text[_position] == c)
            {
                _position++;
                return true;
            }
            return false;
        }

        private void SkipSpace()
        {
            while (_position < text.Length && char.IsWhiteSpace(text[_position]))
            {
                _position++;
            }
        }

        private XenApiException Error(string reason) =>
            new(ErrorCodes.InvalidValue, "expr", $"{text} ({reason} at character {_position})");
    }
}
