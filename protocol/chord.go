package protocol

// MaxChordLen bounds a chord name in bytes. The longest sensible names
// ("C#m7b5/G#", "Bbmaj9#11/F") are well under it.
const MaxChordLen = 24

// chordTokens are the quality and extension tokens a chord may carry after its
// root, tried longest first. A chord has at most maxChordTokens of them.
var chordTokens = []string{
	"maj13", "maj11", "maj9", "maj7", "add13", "add11", "add9", "add2", "add4",
	"dim7", "sus2", "sus4", "min", "maj", "dim", "aug", "sus",
	"m7", "m9", "m6", "69", "13", "11",
	"b5", "#5", "b9", "#9", "#11", "b13", "-5", "+5",
	"M7", "M9", "m", "M", "+", "5", "6", "7", "9", "ø", "°",
}

const maxChordTokens = 4

// ValidChord reports whether s is a chord name: a root A-G, an optional
// accidental (# or b), up to four quality/extension tokens (m, maj7, m7, sus2,
// sus4, dim, aug, add9, 6, 7, 9, b5, ...), and an optional slash bass note
// (/F#). It accepts "C", "F#m7", "Bbmaj7", "D/F#", "Cm7b5", "Gsus4"; it refuses
// "H", "C<script>", "" and anything longer than MaxChordLen. It allocates nothing.
func ValidChord(s string) bool {
	if len(s) == 0 || len(s) > MaxChordLen {
		return false
	}
	i, ok := note(s, 0)
	if !ok {
		return false
	}
	for n := 0; i < len(s) && s[i] != '/'; n++ {
		if n == maxChordTokens {
			return false
		}
		j := token(s, i)
		if j == i {
			return false
		}
		i = j
	}
	if i == len(s) {
		return true
	}
	// slash bass
	j, ok := note(s, i+1)
	return ok && j == len(s)
}

// note reads a note name (A-G with an optional # or b) at s[i:] and returns the
// index after it.
func note(s string, i int) (int, bool) {
	if i >= len(s) || s[i] < 'A' || s[i] > 'G' {
		return i, false
	}
	i++
	if i < len(s) && (s[i] == '#' || s[i] == 'b') {
		i++
	}
	return i, true
}

// token reads the longest chord token at s[i:]; it returns i if there is none.
func token(s string, i int) int {
	rest := s[i:]
	best := i
	for _, t := range chordTokens {
		if len(t) <= len(rest) && rest[:len(t)] == t && i+len(t) > best {
			best = i + len(t)
		}
	}
	return best
}
